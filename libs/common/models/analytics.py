"""Tables owned by analytics."""
