"""Tinybird ``.pipe`` datafiles and their SQL templates, for ``tblog local``'s endpoints.

Owns the file format and the rendering of one request's SQL; the HTTP side is
``tblog.local.pipes_api``.

* File format (Tinybird's line rules, as in ``.datasource`` files: a command followed by
  ``>`` opens a block that goes on over indented lines; ``#`` comment lines and blank
  lines between commands are skipped): a pipe-level ``DESCRIPTION``, then ``NODE name``
  sections, each with ``DESCRIPTION``, ``SQL`` and ``TYPE endpoint`` (or no ``TYPE``: a
  plain node).  ``TOKEN``, ``TAGS`` and ``VERSION`` are read and ignored.  Other node
  types (materialized, copy, sink) are refused: only endpoints are served.
* Nodes read earlier nodes by name: the endpoint's SQL runs as one query with every
  earlier node as a ``WITH name AS (...)`` subquery.
* Templates (a node whose SQL starts with a ``%`` line), the subset of Tinybird's
  language that binds parameters:

  - ``{{ Type(name, default, description="...", required=False, ...) }}`` where ``Type``
    is ``String``, ``Int8``..``Int256``, ``UInt8``..``UInt256``, ``Int``, ``Integer``,
    ``Float32``, ``Float64``, ``Boolean``, ``Date``, ``DateTime``, ``DateTime64`` or
    ``Array(name, 'Type', default='a,b')``;
  - ``{% if EXPR %}`` / ``{% elif EXPR %}`` / ``{% else %}`` / ``{% end %}`` where EXPR
    combines ``defined(name)``, a bare ``name`` (its truthiness), the type functions,
    literals, comparisons, ``not``, ``and`` and ``or``;
  - ``{# comment #}``.

  Everything else (``{{ name }}`` alone, ``{% set %}``, ``{% for %}``, ``columns``,
  ``column``, ``sql_unescape``, any other call or attribute) is refused when the pipe is
  loaded: a parameter value can only ever become a *typed literal*, never SQL text.

Binding is safe by construction: expressions are read with Python's ``ast`` parser and
interpreted over a small allow-list of node types (nothing is ever ``eval``-ed); a value
is checked against its type (``Int32`` must be digits in range, ``DateTime`` a
``YYYY-MM-DD HH:MM:SS`` time...) and written as a literal: a quoted, escaped string for
``String``/``Date``/``DateTime``, digits for integers.  A value that does not fit its
type, or a missing parameter without a default, is a ``TemplateError`` (an HTTP 400).
The rendered SQL still goes through ``tblog.local.sqlguard.verify_sql`` and the
token's row filter, like any ``/v0/sql`` query.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Union

from tblog._sql import string as _sql_string
from tblog.local.datafile import DatafileError

__all__ = [
    "Node",
    "Pipe",
    "TemplateError",
    "load_pipe",
    "parse_pipe",
    "render",
    "template_params",
    "used_tables",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}|\{#.*?#\}", re.DOTALL)
#: Longest parameter value accepted (a string parameter is a literal, but a bounded one).
MAX_VALUE_CHARS = 64 * 1024
#: Deepest ``{% if %}`` nesting accepted (rendering recurses once per level).
MAX_NESTING = 64
#: How deep one ``{{ }}`` or ``{% if %}`` expression may nest (its syntax tree's levels).
MAX_EXPRESSION_DEPTH = 32
_IGNORED = frozenset({"token", "tags", "version"})
_NODE_TYPES = frozenset({"endpoint", "standard", "default"})

_INT_BITS = {f"{p}Int{b}": (p == "", b) for p in ("", "U") for b in (8, 16, 32, 64, 128, 256)}
_INT_BITS.update({"Int": (True, 32), "Integer": (True, 32)})
_TYPES = frozenset({"String", "Float32", "Float64", "Boolean", "Date", "DateTime",
                    "DateTime64", *_INT_BITS})  # fmt: skip
_KWARGS = frozenset({"description", "required", "example", "format", "enum", "default",
                     "defined"})  # fmt: skip
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class TemplateError(ValueError):
    """A template that cannot be used, or a parameter value that does not fit its type."""


@dataclass(frozen=True)
class Node:
    name: str
    sql: str
    description: str = ""
    type: str = "standard"  # "endpoint" or "standard"

    @property
    def is_template(self) -> bool:
        return self.sql.lstrip().startswith("%")


@dataclass(frozen=True)
class Pipe:
    name: str
    nodes: tuple[Node, ...]
    description: str = ""
    source: str = field(default="", compare=False)  # where it came from: a file, "api"

    @property
    def endpoint(self) -> Node | None:
        """The node served at ``/v0/pipes/NAME.json``: the one of ``TYPE endpoint``."""
        return next((n for n in self.nodes if n.type == "endpoint"), None)

    def with_endpoint(self, node_name: str) -> Pipe:
        """The same pipe whose endpoint is ``node_name`` (the other nodes plain)."""
        nodes = tuple(
            Node(n.name, n.sql, n.description, "endpoint" if n.name == node_name else "standard")
            for n in self.nodes
        )
        return Pipe(self.name, nodes, self.description, self.source)

    def query(self, params: Mapping[str, str]) -> str:
        """The endpoint's SQL for one request: earlier nodes as ``WITH`` subqueries."""
        end = self.endpoint
        if end is None:
            raise TemplateError(f"pipe '{self.name}' has no endpoint node")
        rendered: list[str] = []
        for node in self.nodes:
            sql = render(node.sql, params).strip().rstrip(";").strip()
            if node is end:
                if not rendered:
                    return sql
                return "WITH " + ", ".join(rendered) + "\n" + sql
            rendered.append(f"{node.name} AS (\n{sql}\n)")
        raise AssertionError("unreachable: the endpoint is one of the nodes")

    def params(self) -> list[dict[str, Any]]:
        """The parameters of the endpoint's query, as Tinybird lists them."""
        seen: dict[str, dict[str, Any]] = {}
        end = self.endpoint
        for node in self.nodes:
            for param in template_params(node.sql):
                seen.setdefault(param["name"], param)
            if node is end:
                break
        return list(seen.values())


# -- the file format --------------------------------------------------------------------


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, command, argument or block text) in file order."""
    lines = text.splitlines()
    out: list[tuple[int, str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1].isspace():
            raise DatafileError(f"line {i}: indented text outside a block: {stripped[:60]!r}")
        command, _, rest = stripped.partition(" ")
        rest = rest.strip()
        lineno = i
        if rest == ">":
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            rest = "\n".join(b[indent:] for b in block)
        out.append((lineno, command.lower(), rest))
    return out


def parse_pipe(text: str, name: str) -> Pipe:
    """The pipe described by ``text`` (the contents of ``name.pipe``); ``DatafileError``
    when the file cannot be read as one, ``TemplateError`` when a template is refused."""
    if not _NAME.fullmatch(name):
        raise DatafileError(f"invalid pipe name {name!r}: use letters, digits and _")
    description = ""
    nodes: list[dict[str, str]] = []
    for lineno, command, arg in _blocks(text):
        if command == "node":
            if not _NAME.fullmatch(arg):
                raise DatafileError(f"line {lineno}: invalid node name {arg!r}")
            if any(n["name"] == arg for n in nodes):
                raise DatafileError(f"line {lineno}: node {arg!r} is defined twice")
            nodes.append({"name": arg})
        elif command == "description":
            if nodes:
                nodes[-1]["description"] = arg
            else:
                description = arg
        elif command in ("sql", "type"):
            if not nodes:
                raise DatafileError(f"line {lineno}: {command.upper()} outside a NODE")
            nodes[-1][command] = arg
        elif command in _IGNORED:
            continue
        else:
            raise DatafileError(f"line {lineno}: unknown or unsupported command "
                                f"{command.upper()!r} in a .pipe file")  # fmt: skip
    return make_pipe(name, nodes, description)


def make_pipe(name: str, nodes: list[dict[str, str]], description: str = "",
              source: str = "") -> Pipe:  # fmt: skip
    """A checked ``Pipe`` from node dicts (``name``, ``sql``, ``description``, ``type``)."""
    if not _NAME.fullmatch(name):
        raise DatafileError(f"invalid pipe name {name!r}: use letters, digits and _")
    if not nodes:
        raise DatafileError(f"pipe '{name}' has no NODE")
    made: list[Node] = []
    for raw in nodes:
        node_name = str(raw.get("name") or "")
        if not _NAME.fullmatch(node_name):
            raise DatafileError(f"invalid node name {node_name!r}")
        sql = str(raw.get("sql") or "").strip()
        if not sql:
            raise DatafileError(f"node '{node_name}' has no SQL")
        kind = str(raw.get("type") or "standard").strip().lower()
        if kind not in _NODE_TYPES:
            raise DatafileError(f"node '{node_name}': TYPE {kind} is not supported by tblog "
                                "local (only endpoint nodes are served)")  # fmt: skip
        check_template(sql)
        made.append(Node(node_name, sql, str(raw.get("description") or "").strip(),
                         "endpoint" if kind == "endpoint" else "standard"))  # fmt: skip
    if len({n.name for n in made}) != len(made):
        raise DatafileError(f"pipe '{name}' names a node twice")
    if sum(n.type == "endpoint" for n in made) > 1:
        raise DatafileError(f"pipe '{name}' has more than one endpoint node")
    return Pipe(name, tuple(made), description.strip(), source)


def load_pipe(path: str | Path) -> Pipe:
    path = Path(path)
    return parse_pipe(path.read_text(encoding="utf-8"), path.stem)


# -- templates --------------------------------------------------------------------------

_Piece = Union[str, "_Expr", "_If"]


@dataclass(frozen=True)
class _Expr:
    tree: ast.expr


@dataclass(frozen=True)
class _If:
    branches: tuple[tuple[ast.expr | None, tuple[_Piece, ...]], ...]  # None: else


def _expression(text: str) -> ast.expr:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise TemplateError(f"cannot read the template expression {text.strip()[:80]!r}") from None
    # Checked without recursion before anything walks it recursively: how deep a parser
    # lets an expression be differs by Python version (3.13 reads 5,000 nested "not").
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise TemplateError(f"a template expression nests deeper than {MAX_EXPRESSION_DEPTH}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree.body


def _parse_template(sql: str) -> tuple[_Piece, ...]:
    """The template's pieces (text, ``{{ }}`` expressions, ``{% if %}`` blocks)."""
    body = sql.lstrip()[1:]  # the leading %
    stack: list[tuple[list[tuple[ast.expr | None, list[_Piece]]], list[_Piece]]] = []
    current: list[_Piece] = []
    pos = 0
    for m in _TAG.finditer(body):
        if m.start() > pos:
            current.append(body[pos : m.start()])
        pos = m.end()
        if m.group(1) is not None:
            tree = _expression(m.group(1))
            _check_value_expr(tree)
            current.append(_Expr(tree))
        elif m.group(2) is not None:
            word, _, rest = m.group(2).strip().partition(" ")
            if word == "if":
                tree = _expression(rest)
                _check_condition(tree)
                branches: list[tuple[ast.expr | None, list[_Piece]]] = [(tree, [])]
                stack.append((branches, current))
                if len(stack) > MAX_NESTING:
                    raise TemplateError(f"{{% if %}} blocks nest deeper than {MAX_NESTING}")
                current = branches[0][1]
            elif word in ("elif", "else"):
                if not stack or stack[-1][0][-1][0] is None:
                    raise TemplateError(f"{{% {word} %}} without an open {{% if %}}")
                cond: ast.expr | None = None
                if word == "elif":
                    cond = _expression(rest)
                    _check_condition(cond)
                elif rest.strip():
                    raise TemplateError("{% else %} takes nothing")
                stack[-1][0].append((cond, []))
                current = stack[-1][0][-1][1]
            elif word == "end" and not rest.strip():
                if not stack:
                    raise TemplateError("{% end %} without an open {% if %}")
                branches, current = stack.pop()
                current.append(_If(tuple((c, tuple(p)) for c, p in branches)))
            else:
                raise TemplateError(f"{{% {word} %}} is not supported by tblog local "
                                    "(only if/elif/else/end)")  # fmt: skip
    if stack:
        raise TemplateError("an {% if %} has no {% end %}")
    if pos < len(body):
        current.append(body[pos:])
    return tuple(current)


def _type_call(node: ast.expr) -> tuple[str, str, list[ast.expr], dict[str, ast.expr]] | None:
    """(type, parameter name, further arguments, keywords) of ``Type(name, ...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    func = node.func.id
    if func not in _TYPES and func != "Array":
        return None
    if not node.args or not isinstance(node.args[0], ast.Name):
        raise TemplateError(f"{func}(...) takes a parameter name first")
    keywords: dict[str, ast.expr] = {}
    for kw in node.keywords:
        if kw.arg is None or kw.arg not in _KWARGS:
            raise TemplateError(f"{func}(...): unsupported argument {kw.arg!r}")
        keywords[kw.arg] = kw.value
    rest = list(node.args[1:])
    for arg in [*rest, *keywords.values()]:
        _literal(arg)
    if func == "Array":
        if not rest or not isinstance(_literal(rest[0]), str) or _literal(rest[0]) not in _TYPES:
            raise TemplateError("Array(name, 'Type', default='a,b') needs a type name")
        if len(rest) > 2:
            raise TemplateError("Array(...) takes a name, a type and a default")
    elif len(rest) > 1:
        raise TemplateError(f"{func}(...) takes a name and a default")
    return func, node.args[0].id, rest, keywords


def _literal(node: ast.expr) -> Any:
    """A constant (or a list of constants) written in the template."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | None):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    raise TemplateError("template arguments must be literals (strings, numbers, True/False)")


def _check_value_expr(node: ast.expr) -> None:
    if _type_call(node) is None:
        raise TemplateError(
            "only typed parameters are allowed in {{ }} (such as {{ String(name, 'x') }}); "
            "bare names, column(), columns() and other functions are not supported"
        )


def _check_condition(node: ast.expr) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check_condition(value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check_condition(node.operand)
    elif isinstance(node, ast.Compare):
        allowed = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)
        if not all(isinstance(op, allowed) for op in node.ops):
            raise TemplateError("unsupported comparison in {% if %}")
        for value in [node.left, *node.comparators]:
            _check_operand(value)
    else:
        _check_operand(node)


def _check_operand(node: ast.expr) -> None:
    if isinstance(node, ast.Name):
        return
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "defined"):  # fmt: skip
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Name):
            raise TemplateError("defined() takes one parameter name")
        return
    if _type_call(node) is not None:
        return
    _literal(node)


def check_template(sql: str) -> None:
    """Raise ``TemplateError`` when ``sql`` is a template this module refuses."""
    if sql.lstrip().startswith("%"):
        _parse_template(sql)


def template_params(sql: str) -> list[dict[str, Any]]:
    """The parameters a node's template declares (name, type, default, description)."""
    if not sql.lstrip().startswith("%"):
        return []
    out: dict[str, dict[str, Any]] = {}

    def visit(pieces: tuple[_Piece, ...]) -> None:
        for piece in pieces:
            trees: list[ast.expr] = []
            if isinstance(piece, _Expr):
                trees = [piece.tree]
            elif isinstance(piece, _If):
                trees = [c for c, _ in piece.branches if c is not None]
                for _, inner in piece.branches:
                    visit(inner)
            for tree in trees:
                for node in ast.walk(tree):
                    call = _type_call(node) if isinstance(node, ast.expr) else None
                    if call is None:
                        continue
                    func, name, rest, kw = call
                    default = _literal(kw["default"]) if "default" in kw else (
                        _literal(rest[-1]) if rest and func != "Array" else
                        (_literal(rest[1]) if len(rest) > 1 else None))  # fmt: skip
                    kind = f"Array({_literal(rest[0])})" if func == "Array" else func
                    entry = out.setdefault(name, {"name": name, "type": kind})
                    if default is not None:
                        entry.setdefault("default", default)
                    if "description" in kw:
                        entry.setdefault("description", _literal(kw["description"]))
                    if "required" in kw:
                        entry.setdefault("required", bool(_literal(kw["required"])))

    visit(_parse_template(sql))
    return list(out.values())


def render(sql: str, params: Mapping[str, str]) -> str:
    """``sql`` with its template bound to ``params`` (request values, as strings)."""
    if not sql.lstrip().startswith("%"):
        return sql
    for key, value in params.items():
        if len(value) > MAX_VALUE_CHARS:
            raise TemplateError(f"parameter '{key}' is longer than {MAX_VALUE_CHARS} characters")
    out: list[str] = []

    def emit(pieces: tuple[_Piece, ...]) -> None:
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, _Expr):
                out.append(_bind(piece.tree, params))
            else:
                for cond, inner in piece.branches:
                    if cond is None or _truth(cond, params):
                        emit(inner)
                        break

    emit(_parse_template(sql))
    return "".join(out)


# -- binding ----------------------------------------------------------------------------


def _typed(func: str, name: str, raw: str) -> Any:
    """``raw`` (a request value or a default) as a Python value of type ``func``."""
    text = raw.strip() if func != "String" else raw
    bad = TemplateError(f"Error validating '{raw[:100]}' to type {func} (parameter '{name}')")
    if func == "String":
        return raw
    if func in _INT_BITS:
        signed, bits = _INT_BITS[func]
        if not re.fullmatch(r"[+-]?[0-9]{1,80}", text):
            raise bad
        value = int(text)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not low <= value <= high:
            raise bad
        return value
    if func in ("Float32", "Float64"):
        if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
            raise bad
        number = float(text)
        if not math.isfinite(number):
            raise bad
        return number
    if func == "Boolean":
        low = text.lower()
        if low not in _TRUE | _FALSE:
            raise bad
        return low in _TRUE
    formats = {
        "Date": ("%Y-%m-%d",),
        "DateTime": ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"),
        "DateTime64": ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S",
                       "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"),
    }[func]  # fmt: skip
    text = text.rstrip("Zz")
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise bad


def _sql_literal(func: str, value: Any) -> str:
    if func == "String":
        try:
            return _sql_string(str(value))
        except ValueError as exc:  # a lone surrogate: not text ClickHouse can hold
            raise TemplateError(f"Error validating the value to type String ({exc})") from None
    if func == "Boolean":
        return "1" if value else "0"
    if func in _INT_BITS:
        return str(int(value))
    if func in ("Float32", "Float64"):
        return repr(float(value))
    if func == "Date":
        return "'" + str(value.strftime("%Y-%m-%d")) + "'"
    if func == "DateTime":
        return "'" + str(value.strftime("%Y-%m-%d %H:%M:%S")) + "'"
    return "'" + str(value.strftime("%Y-%m-%d %H:%M:%S.%f")) + "'"  # DateTime64


def _value(tree: ast.expr, params: Mapping[str, str]) -> tuple[str, Any] | None:
    """(type, Python value) of a type call; None when the parameter is undefined and the
    call has no default."""
    call = _type_call(tree)
    assert call is not None  # checked when the template was parsed
    func, name, rest, kw = call
    if func == "Array":
        inner = str(_literal(rest[0]))
        default = _literal(kw["default"]) if "default" in kw else (
            _literal(rest[1]) if len(rest) > 1 else None)  # fmt: skip
        raw = params.get(name)
        if raw is None:
            if default is None:
                return None
            items = default if isinstance(default, list) else str(default).split(",")
        else:
            items = raw.split(",")
        return f"Array({inner})", [_typed(inner, name, str(i)) for i in items]
    default = _literal(kw["default"]) if "default" in kw else (
        _literal(rest[0]) if rest else None)  # fmt: skip
    raw = params.get(name)
    if raw is None:
        if default is None:
            return None
        raw = str(default).lower() if isinstance(default, bool) else str(default)
    return func, _typed(func, name, raw)


def _bind(tree: ast.expr, params: Mapping[str, str]) -> str:
    got = _value(tree, params)
    if got is None:
        call = _type_call(tree)
        assert call is not None
        raise TemplateError(f"Required parameter is not defined: '{call[1]}'")
    func, value = got
    if func.startswith("Array("):
        inner = func[6:-1]
        return "[" + ", ".join(_sql_literal(inner, v) for v in value) + "]"
    return _sql_literal(func, value)


_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _operand(node: ast.expr, params: Mapping[str, str]) -> Any:
    if isinstance(node, ast.Name):
        return params.get(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "defined":
        arg = node.args[0]
        return isinstance(arg, ast.Name) and arg.id in params
    if _type_call(node) is not None:
        got = _value(node, params)
        return None if got is None else got[1]
    return _literal(node)


def _truth(node: ast.expr, params: Mapping[str, str]) -> bool:
    if isinstance(node, ast.BoolOp):
        results = (_truth(v, params) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _truth(node.operand, params)
    if isinstance(node, ast.Compare):
        left = _operand(node.left, params)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _operand(right_node, params)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                raise TemplateError("a {% if %} compares values of different types") from None
            left = right
        return True
    return bool(_operand(node, params))


def used_tables(query: str, *, table_functions: bool = False) -> list[tuple[str, str]]:
    """(database, name) of every table ``query`` reads, WITH names left out (database ""
    when none is written); table functions too with ``table_functions``.  The query is
    parsed only (sqlglot, ClickHouse dialect); ``SqlRefusedError`` when it cannot be."""
    import sqlglot  # noqa: PLC0415 - the server's sqlguard has it loaded already
    from sqlglot import exp  # noqa: PLC0415

    from tblog.local.sqlguard import SqlRefusedError, _pre_check  # noqa: PLC0415

    _pre_check(query)  # the SQL API's bounds (length, tokens, nesting) before parsing
    try:
        tree = sqlglot.parse_one(query, read="clickhouse")
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        raise SqlRefusedError("the query could not be parsed") from None
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    out: list[tuple[str, str]] = []
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Func) or not table.name:
            if table_functions and isinstance(table.this, exp.Func):
                fn = table.this
                out.append(("", fn.name if isinstance(fn, exp.Anonymous) else fn.sql_name()))
            continue
        if not table.db and table.name in ctes:
            continue
        if (table.db, table.name) not in out:
            out.append((table.db or "", table.name))
    return out
