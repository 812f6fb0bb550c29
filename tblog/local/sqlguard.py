"""What the SQL API lets through: one read-only statement over datasources, nothing else.

Checks, before ClickHouse runs anything: a single statement; it starts with SELECT,
WITH, DESCRIBE or DESC; no SETTINGS clause; then ClickHouse's own parser
(``EXPLAIN AST``) lists every table and function: tables must be bare names (no
``system.`` or ``default.``), table functions must be harmless generators, and
functions that reach files, URLs or other servers are refused.  The query then runs
with ``readonly = 1`` in a database of views that holds only what the token may read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SqlRefusedError", "check_sql"]

_ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "values",
                                      "generate_series", "generateseries"})  # fmt: skip
_DENIED_FUNCTIONS = re.compile(
    r"^(file|url|s3\w*|gcs|hdfs\w*|azure\w*|remote\w*|cluster\w*|executable\w*|mysql|"
    r"postgresql|mongodb|redis|sqlite|jdbc|odbc|input|python|dictget\w*|joinget\w*|"
    r"getsetting|filesystem\w*|iceberg\w*|deltalake\w*|hudi\w*|merge|loop|view)$",
    re.IGNORECASE,
)
_STATEMENT = re.compile(r"^\s*(SELECT|WITH|DESCRIBE|DESC)\b", re.IGNORECASE)
# Strings and comments in one left-to-right pass, so '--' inside a literal is not a comment.
_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^'\\]|\\.)*'|--[^\n]*|/\*.*?\*/", re.DOTALL)


class SqlRefusedError(Exception):
    """The query is not allowed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_sql(query: str, explain_ast: Callable[[str], str]) -> set[str]:
    """Refuse anything but one read-only statement; return the tables it reads."""
    bare = _STRINGS_AND_COMMENTS.sub(lambda m: "''" if m.group().startswith("'") else " ", query)
    if ";" in bare.strip().rstrip(";"):
        raise SqlRefusedError("only one statement is allowed per query")
    if not _STATEMENT.match(bare):
        raise SqlRefusedError(
            "only SELECT, WITH and DESCRIBE queries are allowed (read-only SQL API)"
        )
    if re.search(r"\bSETTINGS\b", bare, re.IGNORECASE):
        raise SqlRefusedError("SETTINGS clauses are not allowed in the SQL API")
    if re.search(r"\bINTO\s+OUTFILE\b", bare, re.IGNORECASE):
        raise SqlRefusedError("INTO OUTFILE is not allowed in the SQL API")
    try:
        ast = explain_ast(query.strip().rstrip(";"))
    except Exception as exc:  # noqa: BLE001 - a syntax error, as ClickHouse words it
        raise SqlRefusedError(f"[Error] {exc}") from None
    tables: set[str] = set()
    previous = ""
    for line in ast.splitlines():
        node = line.strip()
        kind, _, rest = node.partition(" ")
        target = rest.split(" ", 1)[0]
        if kind == "TableIdentifier":
            if "." in target:
                message = f"table '{target}' is not readable: use datasource names only"
                raise SqlRefusedError(message, 403)
            tables.add(target)
        elif kind == "Function":
            if previous == "TableExpression":
                if target.lower() not in _ALLOWED_TABLE_FUNCTIONS:
                    raise SqlRefusedError(f"table function '{target}' is not allowed", 403)
            elif _DENIED_FUNCTIONS.match(target):
                raise SqlRefusedError(f"function '{target}' is not allowed", 403)
        previous = kind
    return tables
