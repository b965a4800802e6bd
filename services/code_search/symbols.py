"""Symbols (functions, classes, methods, ...) of a source file, from its tree-sitter syntax tree.

One query per language captures the definition nodes in C; Python only names them, nests them
(qualified names such as ``Class.method``) and attaches signature lines and docstrings.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node, Query, QueryCursor

from services.code_search.languages import GRAMMARS, grammar, parser

# Kinds whose members are methods (and that show up as one chunk with their members elided).
TYPE_KINDS = frozenset({"class", "interface", "struct", "enum", "trait", "impl", "union", "record", "module"})


@dataclass(slots=True)
class Symbol:
    name: str
    qualified: str  # "Outer.Inner.method": "." between scopes in every language
    kind: str  # function, method, constructor, class, interface, struct, enum, trait, type, module, ...
    line: int  # 1-based line of the definition itself (what a citation points at)
    end_line: int
    start_line: int  # first line of the definition with its decorators and the doc comment above it
    signature: str
    doc: str
    parent: int = -1  # index of the enclosing symbol in the file's list, -1 at top level


@dataclass(frozen=True, slots=True)
class _Described:
    name: str
    kind: str
    scope: tuple[str, ...] = ()  # qualifiers written in the definition itself (Go receiver, C++ A::b)
    emit: bool = True  # False: only scopes its children (a Rust impl block)


Describe = Callable[[Node], "_Described | None"]


@dataclass(frozen=True)
class _Spec:
    query: str
    wrappers: frozenset[str]  # parents that belong to the definition (decorators, export, template)
    describe: Describe
    python_docstring: bool = False
    one_line_signature: bool = False  # bodies without delimiters (Ruby): the head is the first line


def _text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def _field_text(node: Node, field: str) -> str:
    return _text(node.child_by_field_name(field))


# -- per-language naming ------------------------------------------------------------------------


def _python(node: Node) -> _Described | None:
    name = _field_text(node, "name")
    if not name:
        return None
    return _Described(name, "class" if node.type == "class_definition" else "function")


_JS_KINDS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "function_signature": "function",
    "class_declaration": "class",
    "abstract_class_declaration": "class",
    "class": "class",
    "method_definition": "method",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
    "internal_module": "namespace",
    "variable_declarator": "function",
    "field_definition": "method",
    "public_field_definition": "method",
}


def _javascript(node: Node) -> _Described | None:
    kind = _JS_KINDS.get(node.type)
    if kind is None:
        return None
    name_node = node.child_by_field_name("name") or node.child_by_field_name("property")
    if name_node is None or name_node.type in ("object_pattern", "array_pattern"):
        return None
    name = _text(name_node)
    if not name:
        return None
    if node.type == "internal_module" and "." in name:
        *scope, name = name.split(".")
        return _Described(name, kind, tuple(scope))
    return _Described(name, kind)


def _go_receiver_type(node: Node) -> str:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return ""
    for param in receiver.named_children:
        if param.type != "parameter_declaration":
            continue
        kind = param.child_by_field_name("type")
        while kind is not None and kind.type in ("pointer_type", "generic_type", "parenthesized_type"):
            inner = kind.child_by_field_name("type")
            kind = inner if inner is not None else (kind.named_children[0] if kind.named_children else None)
        return _text(kind)
    return ""


def _go(node: Node) -> _Described | None:
    name = _field_text(node, "name")
    if not name:
        return None
    if node.type == "method_declaration":
        receiver = _go_receiver_type(node)
        return _Described(name, "method", (receiver,) if receiver else ())
    if node.type == "type_spec":
        body = node.child_by_field_name("type")
        kind = {"struct_type": "struct", "interface_type": "interface"}.get(body.type if body else "", "type")
        return _Described(name, kind)
    return _Described(name, "function")


_JAVA_KINDS = {
    "class_declaration": "class",
    "record_declaration": "class",
    "interface_declaration": "interface",
    "annotation_type_declaration": "interface",
    "enum_declaration": "enum",
    "method_declaration": "method",
    "constructor_declaration": "constructor",
}


def _java(node: Node) -> _Described | None:
    name = _field_text(node, "name")
    kind = _JAVA_KINDS.get(node.type)
    return _Described(name, kind) if name and kind else None


_DECLARATOR_WRAPPERS = frozenset(
    {"pointer_declarator", "reference_declarator", "parenthesized_declarator", "attributed_declarator"}
)


def _c_function_name(node: Node) -> tuple[str, tuple[str, ...]] | None:
    declarator = node.child_by_field_name("declarator")
    for _ in range(8):
        if declarator is None:
            return None
        if declarator.type == "function_declarator":
            target = declarator.child_by_field_name("declarator")
            if target is None:
                return None
            if target.type in _DECLARATOR_WRAPPERS:  # a function pointer, not a function
                return None
            text = _text(target)
            if target.type == "qualified_identifier" or "::" in text:
                *scope, name = [part for part in re.split(r"\s*::\s*", text) if part]
                return (name, tuple(s.split("<", 1)[0] for s in scope)) if name else None
            return (text, ()) if text else None
        if declarator.type in _DECLARATOR_WRAPPERS:
            declarator = declarator.child_by_field_name("declarator") or (
                declarator.named_children[-1] if declarator.named_children else None
            )
            continue
        return None
    return None


_C_TYPE_KINDS = {
    "struct_specifier": "struct",
    "union_specifier": "union",
    "enum_specifier": "enum",
    "class_specifier": "class",
}


def _c_family(node: Node) -> _Described | None:
    if node.type == "function_definition":
        found = _c_function_name(node)
        if found is None:
            return None
        name, scope = found
        return _Described(name, "method" if scope else "function", scope)
    if node.type == "type_definition":
        inner = node.child_by_field_name("type")
        name = _field_text(node, "declarator")
        if inner is None or not name or not name.isidentifier():
            return None
        return _Described(name, _C_TYPE_KINDS.get(inner.type, "type"))
    if node.type == "namespace_definition":
        name = _field_text(node, "name")
        return _Described(name.replace("::", "."), "namespace") if name else None
    kind = _C_TYPE_KINDS.get(node.type)
    name = _field_text(node, "name")
    if kind is None or not name:
        return None
    if "::" in name:
        *outer, name = name.split("::")
        return _Described(name, kind, tuple(outer))
    return _Described(name.split("<", 1)[0], kind)


_RUST_KINDS = {
    "function_item": "function",
    "struct_item": "struct",
    "enum_item": "enum",
    "union_item": "union",
    "trait_item": "trait",
    "mod_item": "module",
    "type_item": "type",
    "macro_definition": "macro",
}


def _rust(node: Node) -> _Described | None:
    if node.type == "impl_item":
        target = node.child_by_field_name("type")
        while target is not None and target.type in ("generic_type", "reference_type", "scoped_type_identifier"):
            inner = target.child_by_field_name("type") or target.child_by_field_name("name")
            if inner is None:
                break
            target = inner
        name = _text(target)
        return _Described(name, "impl", emit=False) if name else None
    kind = _RUST_KINDS.get(node.type)
    name = _field_text(node, "name")
    return _Described(name, kind) if kind and name else None


def _ruby(node: Node) -> _Described | None:
    name = _field_text(node, "name")
    if not name:
        return None
    if node.type in ("method", "singleton_method"):
        return _Described(name, "function")
    scope: tuple[str, ...] = ()
    if "::" in name:
        *parts, name = name.split("::")
        scope = tuple(p for p in parts if p)
    return _Described(name, "class" if node.type == "class" else "module", scope)


_JS_DEFS = """
(function_declaration) @def
(generator_function_declaration) @def
(class_declaration) @def
(class name: (_)) @def
(method_definition) @def
(variable_declarator value: [(arrow_function) (function_expression) (generator_function)]) @def
(field_definition value: [(arrow_function) (function_expression)]) @def
(comment) @comment
"""

_TS_DEFS = """
(function_declaration) @def
(generator_function_declaration) @def
(class_declaration) @def
(abstract_class_declaration) @def
(class name: (_)) @def
(method_definition) @def
(interface_declaration) @def
(type_alias_declaration) @def
(enum_declaration) @def
(internal_module) @def
(variable_declarator value: [(arrow_function) (function_expression) (generator_function)]) @def
(public_field_definition value: [(arrow_function) (function_expression)]) @def
(comment) @comment
"""

_C_DEFS = """
(function_definition) @def
(struct_specifier name: (_) body: (_)) @def
(union_specifier name: (_) body: (_)) @def
(enum_specifier name: (_) body: (_)) @def
(type_definition type: [(struct_specifier !name body: (_)) (union_specifier !name body: (_))
                        (enum_specifier !name body: (_))]) @def
(comment) @comment
"""

_CPP_DEFS = (
    _C_DEFS
    + """
(class_specifier name: (_) body: (_)) @def
(namespace_definition name: (_)) @def
"""
)

SPECS: dict[str, _Spec] = {
    "python": _Spec(
        "[(function_definition) (class_definition)] @def (comment) @comment",
        frozenset({"decorated_definition"}),
        _python,
        python_docstring=True,
    ),
    "javascript": _Spec(
        _JS_DEFS, frozenset({"export_statement", "lexical_declaration", "variable_declaration"}), _javascript
    ),
    "typescript": _Spec(
        _TS_DEFS, frozenset({"export_statement", "lexical_declaration", "variable_declaration"}), _javascript
    ),
    "tsx": _Spec(_TS_DEFS, frozenset({"export_statement", "lexical_declaration", "variable_declaration"}), _javascript),
    "go": _Spec(
        "[(function_declaration) (method_declaration) (type_spec)] @def (comment) @comment",
        frozenset({"type_declaration"}),
        _go,
    ),
    "java": _Spec(
        """[(class_declaration) (record_declaration) (interface_declaration) (annotation_type_declaration)
            (enum_declaration) (method_declaration) (constructor_declaration)] @def
           [(line_comment) (block_comment)] @comment""",
        frozenset(),
        _java,
    ),
    "c": _Spec(_C_DEFS, frozenset(), _c_family),
    "cpp": _Spec(_CPP_DEFS, frozenset({"template_declaration"}), _c_family),
    "rust": _Spec(
        """[(function_item) (struct_item) (enum_item) (union_item) (trait_item) (impl_item) (mod_item body: (_))
            (type_item) (macro_definition)] @def
           [(line_comment) (block_comment)] @comment
           (attribute_item) @attribute""",
        frozenset(),
        _rust,
    ),
    "ruby": _Spec(
        "[(method) (singleton_method) (class) (module)] @def (comment) @comment",
        frozenset(),
        _ruby,
        one_line_signature=True,
    ),
}

_queries_lock = threading.Lock()
_queries: dict[str, Query] = {}


def _query(language: str) -> Query:
    with _queries_lock:
        found = _queries.get(language)
        if found is None:
            found = _queries[language] = Query(grammar(language), SPECS[language].query)
        return found


# -- docs and signatures --------------------------------------------------------------------------

_GROUPS = frozenset({"type_declaration", "lexical_declaration", "variable_declaration"})
_COMMENT_MARKS = re.compile(r"^\s*(?:///?|//!|/\*+!?|\*+/?|#+!?|--)\s?")
_STRING_QUOTES = re.compile(r"^[rRbBuUfF]*(\"\"\"|'''|\"|')|(\"\"\"|'''|\"|')$")
_MAX_DOC = 400
_MAX_SIGNATURE = 240


def _clean_comment(text: str) -> str:
    lines = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("*/"):
            line = line[:-2]
        line = _COMMENT_MARKS.sub("", line).strip()
        if line:
            lines.append(line)
    return " ".join(lines)[:_MAX_DOC]


def _python_docstring(node: Node) -> str:
    body = node.child_by_field_name("body")
    # named_child(0), not named_children[0]: a class body would build a node object per member.
    first = body.named_child(0) if body is not None else None
    if first is None or first.type != "expression_statement":
        return ""
    string = first.named_child(0)
    if string is None or string.type != "string":
        return ""
    text = _STRING_QUOTES.sub("", _text(string).strip())
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    first_paragraph = paragraphs[0] if paragraphs else ""
    return " ".join(line.strip() for line in first_paragraph.splitlines())[:_MAX_DOC]


def _signature(node: Node, source: bytes, start_byte: int, one_line: bool) -> str:
    if node.type == "type_definition":  # typedef struct { ... } name;
        inner = node.child_by_field_name("type")
        keyword = inner.type.split("_", 1)[0] if inner is not None else "struct"
        return f"typedef {keyword} {_field_text(node, 'declarator')}"
    body = None if one_line else node.child_by_field_name("body")
    if body is None:
        value = node.child_by_field_name("value")
        body = value.child_by_field_name("body") if value is not None else None
    end = body.start_byte if body is not None and body.start_byte > start_byte else node.end_byte
    newline = source.find(b"\n", start_byte, end)
    if (body is None or one_line) and newline != -1:
        end = newline
    head = source[start_byte : min(end, start_byte + 4 * _MAX_SIGNATURE)].decode("utf-8", "replace")
    head = " ".join(head.split()).rstrip("{:= ").rstrip()
    if head.endswith("=>"):
        head = head[:-2].rstrip()
    return head[:_MAX_SIGNATURE]


def _end_row(node: Node) -> int:
    # Line comments may include their newline: an end at column 0 belongs to the line above.
    point = node.end_point
    return point.row - 1 if point.column == 0 and point.row > node.start_point.row else point.row


# -- extraction -----------------------------------------------------------------------------------


def extract(source: bytes, language: str, *, details: bool = True) -> list[Symbol]:
    """Every definition in the file, in source order, with its enclosing symbol (``parent``).

    ``details=False`` leaves ``signature`` and ``doc`` empty: the index reads neither, and building
    them is about a third of the Python work here (tree-sitter's parse aside)."""
    if language not in GRAMMARS:
        return []
    spec = SPECS[language]
    tree = parser(language).parse(source)
    captures = QueryCursor(_query(language)).captures(tree.root_node)
    lines = source.split(b"\n")

    # Own-line comments and attributes by the line they end on: what sits right above a definition.
    above: dict[int, tuple[int, str]] = {}
    for comment in captures.get("comment", ()):
        row, column = comment.start_point.row, comment.start_point.column
        if row < len(lines) and lines[row][:column].strip():
            continue  # a trailing comment after code
        above.setdefault(_end_row(comment), (row, _text(comment) if details else ""))
    for attribute in captures.get("attribute", ()):
        above.setdefault(_end_row(attribute), (attribute.start_point.row, ""))

    defs = sorted({n.id: n for n in captures.get("def", ())}.values(), key=lambda n: (n.start_byte, -n.end_byte))
    symbols: list[Symbol] = []
    # Open scopes: (end_byte, symbol index or -1 for scope-only, qualified prefix, kind).
    stack: list[tuple[int, int, str, str]] = []
    for node in defs:
        described = spec.describe(node)
        if described is None:
            continue
        while stack and stack[-1][0] <= node.start_byte:
            stack.pop()
        outer_prefix = stack[-1][2] if stack else ""
        outer_kind = stack[-1][3] if stack else ""
        parts = [outer_prefix] if outer_prefix else []
        parts.extend(described.scope)
        prefix = ".".join(p for p in parts if p)
        qualified = f"{prefix}.{described.name}" if prefix else described.name
        kind = described.kind
        if kind == "function" and (outer_kind in TYPE_KINDS or described.scope):
            kind = "method"

        if not described.emit:
            stack.append((node.end_byte, -1, qualified, kind))
            continue

        outer = node
        while outer.parent is not None and outer.parent.type in spec.wrappers:
            if outer.parent.type in _GROUPS and outer.parent.named_child_count > 1:
                break  # `type ( A ...; B ... )`: each definition starts on its own line
            outer = outer.parent
        start_row = outer.start_point.row
        doc_parts: list[str] = []
        while start_row - 1 in above:
            start_row, text = above[start_row - 1]
            if text:
                doc_parts.append(text)
        doc = _clean_comment("\n".join(reversed(doc_parts))) if doc_parts else ""
        if spec.python_docstring and details:
            doc = _python_docstring(node) or doc
        # `const f = () =>` and Go's `type T struct` read better with their declaration keyword.
        keyword_outside = node.type in ("variable_declarator", "type_spec") and outer is not node
        signature_start = outer.start_byte if keyword_outside else node.start_byte

        parent = next((entry[1] for entry in reversed(stack) if entry[1] >= 0), -1)
        symbols.append(
            Symbol(
                name=described.name,
                qualified=qualified,
                kind=kind,
                line=node.start_point.row + 1,
                end_line=_end_row(node) + 1,
                start_line=start_row + 1,
                signature=_signature(node, source, signature_start, spec.one_line_signature) if details else "",
                doc=doc,
                parent=parent,
            )
        )
        stack.append((node.end_byte, len(symbols) - 1, qualified, kind))
    return symbols
