"""Parser of Tinybird ``.datasource`` files, and the ClickHouse DDL they describe.

Owns the file format only: ``DESCRIPTION``, ``SCHEMA`` (columns with ``json:$.path``
JSONPaths, ``DEFAULT``/``MATERIALIZED``/``ALIAS`` expressions and ``CODEC``),
``INDEXES``, ``ENGINE`` and every ``ENGINE_*`` setting (sorting, partition and primary
keys, TTL, settings, engine parameters), ``TOKEN``, ``TAGS`` and ``VERSION``.  The
line rules follow Tinybird's own parser: a command followed by ``>`` opens a block
that goes on over indented lines; blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Column",
    "DatafileError",
    "Datasource",
    "datasource_from_params",
    "load_datasource",
    "load_directory",
    "parse_datasource",
    "quote_identifier",
]

_SIMPLE_COMMANDS = frozenset({"description", "schema", "indexes", "engine", "token", "tags",
                              "version", "shared_with", "forward_query"})  # fmt: skip
_KEYWORDS = re.compile(r"(DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL|CODEC|TTL)\b", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_PART = re.compile(r"\.([A-Za-z0-9_@$-]+)|\['([^']*)'\]|\[\"([^\"]*)\"\]|(\[:\])")
# Parameters of MergeTree-family engines, in the order ClickHouse takes them.
_ENGINE_PARAMS = {
    "ReplacingMergeTree": ("ver", "is_deleted"),
    "CollapsingMergeTree": ("sign",),
    "VersionedCollapsingMergeTree": ("sign", "version"),
    "SummingMergeTree": ("columns",),
}
_CLAUSES = (
    ("partition_key", "PARTITION BY"),
    ("sorting_key", "ORDER BY"),
    ("primary_key", "PRIMARY KEY"),
    ("sampling_key", "SAMPLE BY"),
    ("ttl", "TTL"),
    ("settings", "SETTINGS"),
)


class DatafileError(ValueError):
    """A ``.datasource`` file that cannot be parsed; the message names the file and line."""


def quote_identifier(name: str) -> str:
    """``name`` as a ClickHouse identifier in backticks."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class Column:
    """One column of a SCHEMA: its full ClickHouse type and how a JSON row fills it."""

    name: str
    type: str
    jsonpath: str | None = None
    default_kind: str | None = None  # DEFAULT, MATERIALIZED, ALIAS or EPHEMERAL
    default_expr: str | None = None
    codec: str | None = None
    ttl: str | None = None

    @property
    def nullable(self) -> bool:
        return self.type.startswith("Nullable(")

    @property
    def inner_type(self) -> str:
        """The type without an outer ``Nullable(...)`` (as Tinybird's parser reports it)."""
        return self.type[len("Nullable(") : -1] if self.nullable else self.type

    @property
    def path(self) -> tuple[str, ...]:
        """The JSONPath as keys (``$.a.b`` -> ``("a", "b")``); the column name when absent."""
        if not self.jsonpath:
            return (self.name,)
        return parse_jsonpath(self.jsonpath)

    @property
    def insertable(self) -> bool:
        """Whether rows carry a value for it (MATERIALIZED and ALIAS columns are computed)."""
        return self.default_kind not in ("MATERIALIZED", "ALIAS")

    def ddl(self) -> str:
        parts = [quote_identifier(self.name), self.type]
        if self.default_kind:
            parts.append(self.default_kind)
            if self.default_expr:
                parts.append(self.default_expr)
        if self.codec:
            parts.append(self.codec)
        if self.ttl:
            parts.append(f"TTL {self.ttl}")
        return " ".join(parts)


@dataclass(frozen=True)
class Datasource:
    """A parsed ``.datasource`` file."""

    name: str
    columns: tuple[Column, ...]
    description: str = ""
    engine: str = "MergeTree"
    engine_args: dict[str, str] = field(default_factory=dict)
    indexes: str = ""
    tokens: tuple[tuple[str, str], ...] = ()
    source: str = ""

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def engine_sql(self) -> str:
        params = [self.engine_args[p] for p in _ENGINE_PARAMS.get(self.engine, ())
                  if p in self.engine_args]  # fmt: skip
        sql = f"ENGINE = {self.engine}({', '.join(params)})"
        if self.engine.endswith("MergeTree"):
            args = dict(self.engine_args)
            args.setdefault("sorting_key", "tuple()")
            for key, clause in _CLAUSES:
                value = args.get(key, "").strip()
                if value:
                    if key != "settings" and len(_split_top(value)) > 1:
                        value = f"({value})"  # a tuple key needs its parentheses in DDL
                    sql += f"\n{clause} {value}"
        return sql

    def create_sql(self, table: str | None = None) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for this datasource (in the current database)."""
        cols = [c.ddl() for c in self.columns]
        if self.indexes.strip():
            cols += [f"INDEX {line.strip().rstrip(',')}" for line in self.indexes.splitlines()
                     if line.strip()]  # fmt: skip
        body = ",\n    ".join(cols)
        return (
            f"CREATE TABLE IF NOT EXISTS {quote_identifier(table or self.name)} (\n    {body}\n)\n"
            f"{self.engine_sql()}"
        )

    def quarantine_sql(self) -> str:
        """The ``<name>_quarantine`` table: each column as Nullable(String), plus the errors."""
        cols = [
            "`c__error_column` Array(String)",
            "`c__error` Array(String)",
            "`c__import_id` Nullable(String)",
            "`insertion_date` DateTime DEFAULT now()",
        ]
        cols += [f"{quote_identifier(c.name)} Nullable(String)" for c in self.columns
                 if c.insertable and c.name not in _QUARANTINE_OWN]  # fmt: skip
        cols.append("`c__raw` Nullable(String)")
        body = ",\n    ".join(cols)
        return (
            f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.name + '_quarantine')} (\n"
            f"    {body}\n)\nENGINE = MergeTree ORDER BY insertion_date"
        )


_QUARANTINE_OWN = frozenset({"c__error_column", "c__error", "c__import_id", "insertion_date",
                             "c__raw"})  # fmt: skip


def parse_jsonpath(path: str) -> tuple[str, ...]:
    """``$.a.b``, ``$['a b'].c``, ``$.items[:]`` -> keys (``[:]`` takes the array as it is)."""
    text = path.strip()
    if not text.startswith("$"):
        raise DatafileError(f"JSONPath {path!r} must start with $")
    keys: list[str] = []
    pos = 1
    while pos < len(text):
        m = _PATH_PART.match(text, pos)
        if not m:
            raise DatafileError(f"unsupported JSONPath {path!r}")
        if m.group(4) is None:  # ``[:]`` selects the whole array: no key
            keys.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    if not keys:
        raise DatafileError(f"JSONPath {path!r} selects no field")
    return tuple(keys)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
        return text[1:-1]
    return text


def _strip_comments(text: str) -> str:
    """Remove ``-- comments`` outside quotes and backticks."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
            out.append(c)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _in_quote(text: str, i: int, quote: str) -> tuple[int, str]:
    """One step inside a ``quote``: past an escaped character, or out at the closing quote."""
    if text[i] == "\\":
        return i + 1, quote
    return i, "" if text[i] == quote else quote


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses, quotes and backticks."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            i, quote = _in_quote(text, i, quote)
        elif c in "'\"`":
            quote = c
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _clauses(text: str) -> list[tuple[str, str]]:
    """Split a column definition after its name into (kind, text) at top-level keywords."""
    out: list[tuple[str, str]] = []
    kind, start, depth, quote, i = "TYPE", 0, 0, "", 0

    def close(end: int) -> None:
        chunk = text[start:end].strip()
        if chunk or kind != "TYPE":
            out.append((kind, chunk))

    while i < len(text):
        c = text[i]
        if quote:
            i, quote = _in_quote(text, i, quote)
        elif c == "`" and depth == 0:
            end = text.find("`", i + 1)
            if end < 0:
                raise DatafileError(f"unclosed backtick in {text!r}")
            inner = text[i + 1 : end]
            if inner.startswith("json:"):
                close(i)
                out.append(("JSON", inner[len("json:") :].strip()))
                kind, start = "TYPE_TAIL", end + 1
            i = end + 1
            continue
        elif c in "'\"":
            quote = c
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif depth == 0 and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = _KEYWORDS.match(text, i)
            if m:
                close(i)
                kind, start = m.group(1).upper(), m.end()
                i = m.end()
                continue
        i += 1
    close(len(text))
    return [(k, v) for k, v in out if k != "TYPE_TAIL" or v]


def parse_column(definition: str) -> Column:
    text = definition.strip()
    if text.startswith("`"):
        end = text.find("`", 1)
        if end < 0:
            raise DatafileError(f"unclosed backtick in column {definition!r}")
        name, rest = text[1:end], text[end + 1 :]
    else:
        m = _NAME.match(text)
        if not m:
            raise DatafileError(f"bad column name in {definition!r}")
        name, rest = m.group(0), text[m.end() :]
    type_ = ""
    values: dict[str, str] = {}
    default_kind: str | None = None
    for kind, value in _clauses(rest):
        if kind == "TYPE":
            type_ = " ".join(value.split())
        elif kind == "TYPE_TAIL":
            raise DatafileError(f"unexpected {value!r} after the JSONPath of column {name!r}")
        elif kind in ("DEFAULT", "MATERIALIZED", "ALIAS", "EPHEMERAL"):
            default_kind, values["default"] = kind, value
        elif kind == "CODEC":
            values["codec"] = "CODEC" + value
        else:
            values[kind.lower()] = value
    if not type_:
        raise DatafileError(f"column {name!r} has no type")
    if values.get("json"):
        parse_jsonpath(values["json"])  # refuse a bad JSONPath now, not at the first row
    return Column(
        name=name,
        type=type_,
        jsonpath=values.get("json"),
        default_kind=default_kind,
        default_expr=values.get("default") or None,
        codec=values.get("codec"),
        ttl=values.get("ttl"),
    )


def parse_schema(text: str) -> tuple[Column, ...]:
    columns = tuple(parse_column(d) for d in _split_top(_strip_comments(text)))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise DatafileError("duplicate column names in SCHEMA")
    return columns


def _commands(text: str) -> list[tuple[int, str, str]]:
    """(line number, command, value) in file order, with ``>`` blocks joined."""
    out: list[tuple[int, str, str]] = []
    block: tuple[int, str] | None = None
    block_lines: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word = stripped.split(None, 1)[0].lower()
        known = word in _SIMPLE_COMMANDS or word.startswith("engine_")
        if block is not None:
            if raw[:1] in (" ", "\t") or not known:
                block_lines.append(raw)
                continue
            out.append((block[0], block[1], "\n".join(block_lines)))
            block = None
        if not known:
            raise DatafileError(f"line {lineno}: unknown command {stripped.split()[0]!r}")
        rest = stripped[len(word) :].strip()
        if rest == ">":
            block, block_lines = (lineno, word), []
        else:
            out.append((lineno, word, rest))
    if block is not None:
        out.append((block[0], block[1], "\n".join(block_lines)))
    return out


def parse_datasource(text: str, name: str) -> Datasource:
    """Parse the text of ``<name>.datasource``; raises ``DatafileError`` naming the line."""
    columns: tuple[Column, ...] = ()
    description = indexes = ""
    engine = "MergeTree"
    engine_args: dict[str, str] = {}
    tokens: list[tuple[str, str]] = []
    for lineno, command, value in _commands(text):
        try:
            if command == "schema":
                columns = parse_schema(value)
            elif command == "description":
                description = value.strip()
            elif command == "indexes":
                indexes = value
            elif command == "engine":
                engine = _unquote(value)
            elif command.startswith("engine_"):
                engine_args[command[len("engine_") :]] = _unquote(value)
            elif command == "token":
                parts = value.split()
                if len(parts) < 2:
                    raise DatafileError('TOKEN takes a name and a permission: TOKEN "name" APPEND')
                tokens.append((_unquote(" ".join(parts[:-1])), parts[-1].upper()))
        except DatafileError as exc:
            raise DatafileError(f"{name}.datasource, line {lineno}: {exc}") from None
    if not columns:
        raise DatafileError(f"{name}.datasource has no SCHEMA")
    return Datasource(
        name=name,
        columns=columns,
        description=description,
        engine=engine,
        engine_args=engine_args,
        indexes=indexes,
        tokens=tuple(tokens),
        source=text,
    )


#: A datasource name the Data Sources API accepts (as Tinybird's: letters, digits, ``_``).
DATASOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def datasource_from_params(name: str, params: dict[str, str]) -> Datasource:
    """The datasource that ``POST /v0/datasources?name=NAME&schema=...`` describes, in
    Tinybird's parameters: ``schema`` (columns as in a SCHEMA block, with ``json:``
    paths), ``engine``, ``engine_*`` (``engine_sorting_key``, ``engine_ttl``...),
    ``description``, ``indexes``.  Rendered as a ``.datasource`` text (kept as
    ``source``) and parsed by ``parse_datasource``: the same rules as a file."""
    if not DATASOURCE_NAME.fullmatch(name) or name.endswith("_quarantine"):
        raise DatafileError(f"invalid datasource name {name!r}: use letters, digits and "
                            "_, not ending in _quarantine")  # fmt: skip
    schema = params.get("schema", "")
    if not schema.strip():
        raise DatafileError("a schema is required: schema=`col` Type `json:$.col`, ...")
    columns = _split_top(_strip_comments(schema))
    lines: list[str] = []
    description = params.get("description", "").strip()
    if description:
        lines += ["DESCRIPTION >", *(f"    {line}" for line in description.splitlines()), ""]
    lines += ["SCHEMA >", ",\n".join(f"    {' '.join(c.split())}" for c in columns), ""]
    if params.get("indexes", "").strip():
        lines += ["INDEXES >", *(f"    {line.strip()}" for line in
                                 params["indexes"].splitlines() if line.strip()), ""]  # fmt: skip
    lines.append(f'ENGINE "{_unquote(params.get("engine") or "MergeTree")}"')
    for key in sorted(params):
        value = " ".join(params[key].split())
        if key.startswith("engine_") and value and _NAME.fullmatch(key):
            lines.append(f"{key.upper()} {value}")
    return parse_datasource("\n".join(lines) + "\n", name)


def load_datasource(path: str | Path) -> Datasource:
    path = Path(path)
    return parse_datasource(path.read_text(encoding="utf-8"), path.stem)


def load_directory(directory: str | Path) -> list[Datasource]:
    """Every ``*.datasource`` file in ``directory``, sorted by name."""
    return [load_datasource(p) for p in sorted(Path(directory).glob("*.datasource"))]
