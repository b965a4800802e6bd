"""Which language a file is in, and the tree-sitter grammar (per-language wheels) that parses it.

Grammars load lazily, once per process: the indexer's worker processes only pay for the languages
they meet.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

from tree_sitter import Language, Parser


@dataclass(frozen=True)
class Grammar:
    module: str  # the per-language wheel
    function: str  # its function returning the language pointer


# Languages with a tree-sitter grammar: their files yield symbols.
GRAMMARS: dict[str, Grammar] = {
    "python": Grammar("tree_sitter_python", "language"),
    "javascript": Grammar("tree_sitter_javascript", "language"),
    "typescript": Grammar("tree_sitter_typescript", "language_typescript"),
    "tsx": Grammar("tree_sitter_typescript", "language_tsx"),
    "go": Grammar("tree_sitter_go", "language"),
    "java": Grammar("tree_sitter_java", "language"),
    "c": Grammar("tree_sitter_c", "language"),
    "cpp": Grammar("tree_sitter_cpp", "language"),
    "rust": Grammar("tree_sitter_rust", "language"),
    "ruby": Grammar("tree_sitter_ruby", "language"),
}

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".ipp": "cpp", ".inl": "cpp",
    ".rs": "rust",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby",
    # Indexed as text (no grammar bundled): labelled so filters and answers can name them.
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst", ".txt": "text",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json", ".jsonc": "json",
    ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".properties": "ini", ".env.example": "ini",
    ".xml": "xml", ".html": "html", ".htm": "html", ".css": "css", ".scss": "css", ".less": "css",
    ".sql": "sql", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ps1": "powershell",
    ".proto": "protobuf", ".graphql": "graphql", ".gql": "graphql", ".tf": "terraform", ".hcl": "terraform",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".php": "php", ".cs": "csharp", ".scala": "scala",
    ".lua": "lua", ".pl": "perl", ".r": "r", ".dart": "dart", ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang", ".hs": "haskell", ".ml": "ocaml", ".clj": "clojure", ".vue": "vue", ".svelte": "svelte",
    ".mk": "make", ".cmake": "cmake", ".gradle": "gradle", ".j2": "jinja", ".jinja": "jinja",
    ".mako": "mako", ".ipynb": "json", ".csv": "csv", ".tsv": "csv",
}

FILENAMES: dict[str, str] = {
    "Dockerfile": "dockerfile", "Containerfile": "dockerfile", "Makefile": "make", "GNUmakefile": "make",
    "CMakeLists.txt": "cmake", "Gemfile": "ruby", "Rakefile": "ruby", "Vagrantfile": "ruby",
    "Jenkinsfile": "groovy", "Procfile": "text", "BUILD": "starlark", "WORKSPACE": "starlark",
}

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Never text: decided from the name alone, without reading the file.
BINARY_EXTENSIONS = _wordset(
    """
    .png .jpg .jpeg .gif .bmp .ico .icns .webp .tif .tiff .psd .svgz .heic .avif
    .pdf .doc .docx .xls .xlsx .ppt .pptx .odt .ods .key .numbers .pages
    .zip .gz .tgz .bz2 .xz .zst .7z .rar .tar .jar .war .ear .apk .ipa .dmg .iso .deb .rpm .whl .egg
    .so .dylib .dll .exe .o .obj .a .lib .pyc .pyo .pyd .class .wasm .beam .elc
    .woff .woff2 .ttf .otf .eot .mp3 .mp4 .m4a .mov .avi .mkv .wav .ogg .flac .webm
    .db .sqlite .sqlite3 .mdb .bin .dat .parquet .npy .npz .pkl .pickle .h5 .hdf5 .onnx .pt .pth .ckpt
    .safetensors .tflite .pb .glb .fbx .blend
    """
)


def detect(path: str) -> str | None:
    """The language of a repository-relative path, or None when only its content can tell (text or not)."""
    pure = PurePosixPath(path)
    name = pure.name
    if name in FILENAMES:
        return FILENAMES[name]
    lowered = name.lower()
    if lowered.endswith(".env.example"):
        return "ini"
    return EXTENSIONS.get(pure.suffix.lower())


def is_binary_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in BINARY_EXTENSIONS


def has_grammar(language: str | None) -> bool:
    return language in GRAMMARS


_lock = threading.Lock()
_languages: dict[str, Language] = {}
_parsers = threading.local()


def grammar(language: str) -> Language:
    with _lock:
        loaded = _languages.get(language)
        if loaded is None:
            spec = GRAMMARS[language]
            loaded = Language(getattr(importlib.import_module(spec.module), spec.function)())
            _languages[language] = loaded
        return loaded


def parser(language: str) -> Parser:
    """A parser for the language, one per thread (a Parser is not safe to share between threads)."""
    cache: dict[str, Parser] | None = getattr(_parsers, "cache", None)
    if cache is None:
        cache = _parsers.cache = {}
    found = cache.get(language)
    if found is None:
        found = cache[language] = Parser(grammar(language))
    return found
