"""repotalk's composition root: the command line, the embedded runner and the process launcher.

Services never import each other; this package is the one place that wires them together.
"""

__version__ = "0.1.0"
