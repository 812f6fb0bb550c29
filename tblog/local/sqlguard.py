"""What the SQL API lets through: one read-only SELECT over readable datasources.

No user text reaches chDB, not even ``EXPLAIN``: ``verify_sql`` parses the query with
sqlglot's ClickHouse dialect and accepts it only when the parse tree is exactly one
SELECT (WITH, UNION/INTERSECT/EXCEPT of SELECTs and subqueries allowed) or a
``DESCRIBE <datasource>``, built only from known-harmless node types, where:

* every table is a bare name of a datasource the token may read (or of a CTE of the
  query); each datasource is then *qualified by the server* with the database the
  query must read (the token's database of filtered views), so the query cannot name
  ``system.``, ``default.`` or any other database itself;
* every function is on an **allow-list** of ordinary scalar, aggregate and window
  functions, and every table function on a short allow-list of generators (``numbers``,
  ``zeros``, ``generate_series``).  An allow-list rather than a deny-list because
  ClickHouse keeps adding functions that reach files, URLs, other servers, settings,
  dictionaries or server internals (``file``, ``url``, ``s3``, ``remote``,
  ``dictGet``, ``joinGet``, ``getSetting``, ``currentDatabase``, ``sleep``...): a new
  one is refused until someone adds it here on purpose;
* there is no ``INTO OUTFILE``, ``SETTINGS``, ``FORMAT`` (the server strips a trailing
  ``FORMAT X`` itself and passes it as the output format), query parameter or
  placeholder, no ``IN <table>`` (no name at all on the right of ``IN`` outside a
  subquery, however bracketed: ClickHouse reads ``x IN ((system.one))`` as a table), no
  database-qualified column and no column qualified by a name that is not a table,
  alias or CTE of its (or an enclosing) SELECT, or a lambda parameter.

What runs is not the user's text but SQL generated again from the verified tree
(without comments); that text is parsed and verified a second time, must regenerate
to itself, and passes a last lexical check (no ``;``, comment markers, backticks or
calls of anything off the allow-list outside string literals).  Anything else is a
``SqlRefusedError`` (400, or 403 for a table the token may not read).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import SqlglotError
from sqlglot.errors import TokenError as _SqlglotTokenError
from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

__all__ = ["SqlRefusedError", "VerifiedQuery", "check_sql", "verify_sql"]

#: A sqlglot tree node (its base class is ``Expression`` or, since v26, ``Expr``).
_Node = Any

#: Longest query text accepted (ClickHouse's own ``max_query_size`` default).
MAX_QUERY_CHARS = 256 * 1024
#: Most tokens and deepest bracket nesting accepted (checked before parsing).
MAX_TOKENS = 20_000
MAX_DEPTH = 32

_ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt",
                                      "generate_series", "generateseries"})  # fmt: skip

_FUNCTIONS_TEXT = """
cast exists count sum avg min max any anylast anyheavy argmin argmax uniq uniqexact
uniqcombined uniqhll12 uniqtheta quantile quantiles quantileexact quantilesexact
quantiletdigest quantilestdigest quantiletiming quantilestiming median medianexact
stddevpop stddevsamp varpop varsamp covarpop covarsamp corr grouparray groupuniqarray
grouparraysorted groupbitand groupbitor groupbitxor topk topkweighted summap minmap
maxmap avgweighted sumwithoverflow histogram first_value last_value nth_value
row_number rank dense_rank percent_rank cume_dist lag lead laginframe leadinframe
ntile countif sumif avgif minif maxif uniqif argmaxif argminif anyif grouparrayif
quantileif quantilesif countdistinct sumdistinct countarray sumarray
if multiif coalesce ifnull nullif isnull isnotnull assumenotnull tonullable greatest
least and or not xor equals notequals less greater lessorequals greaterorequals
plus minus multiply divide intdiv intdivorzero modulo moduloorzero negate abs
round roundbankers floor ceil ceiling trunc truncate sqrt cbrt exp exp2 exp10 log
ln log2 log10 log1p pow power sign sin cos tan asin acos atan atan2 pi e
gcd lcm isfinite isinfinite isnan bitand bitor bitxor bitnot bitshiftleft
bitshiftright length lengthutf8 char_length character_length empty notempty lower
upper lowerutf8 upperutf8 reverse reverseutf8 concat concat_ws concatwithseparator
substring substr substringutf8 mid left right leftutf8 rightutf8 trim ltrim rtrim
trimboth trimleft trimright lpad rpad leftpad rightpad repeat space format
position positioncaseinsensitive positionutf8 positioncaseinsensitiveutf8 locate
instr strpos startswith endswith like ilike notlike notilike match extract
extractall extractgroups replace replaceone replaceall replaceregexpone
replaceregexpall regexpextract regexp_replace multisearchany multisearchfirstindex
multimatchany countsubstrings countmatches splitbychar splitbystring splitbyregexp
splitbywhitespace arraystringconcat base64encode base64decode hex unhex tostring
tofixedstring tostringcuttozero touint8 touint16 touint32 touint64 toint8 toint16
toint32 toint64 tofloat32 tofloat64 todecimal32 todecimal64 todecimal128 todate
todate32 todatetime todatetime64 touuid touint8orzero touint32orzero touint64orzero
toint32orzero toint64orzero tofloat64orzero toint64ornull tofloat64ornull
todateornull todatetimeornull todatetime64ornull touuidornull parsedatetimebesteffort
parsedatetimebesteffortornull parsedatetime64besteffort parsedatetime64besteffortornull
totypename totimezone tounixtimestamp tounixtimestamp64milli tounixtimestamp64micro
tounixtimestamp64nano fromunixtimestamp fromunixtimestamp64milli
fromunixtimestamp64micro fromunixtimestamp64nano now now64 today yesterday toyear
toquarter tomonth todayofyear todayofmonth todayofweek tohour tominute tosecond
tomillisecond tostartofyear tostartofquarter tostartofmonth tostartofweek
tostartofday tostartofhour tostartofminute tostartofsecond tostartoffiveminutes
tostartoftenminutes tostartoffifteenminutes tostartofinterval tomonday toyyyymm
toyyyymmdd toyyyymmddhhmmss toisoweek toisoyear date_trunc datetrunc date_diff
datediff dateadd date_add datesub date_sub timestampadd timestampsub addseconds
addminutes addhours adddays addweeks addmonths addyears subtractseconds
subtractminutes subtracthours subtractdays subtractweeks subtractmonths
subtractyears formatdatetime formatdatetimeinjodasyntax todatetimeorzero
tointervalsecond tointervalminute tointervalhour tointervalday tointervalweek
tointervalmonth tointervalyear tointervalquarter tointervalmillisecond
tointervalmicrosecond tointervalnanosecond tostartofmillisecond tostartofmicrosecond
tostartofnanosecond array range arrayjoin arraymap arrayfilter arrayexists
arrayall arraycount arraysum arrayavg arraymin arraymax arrayfirst arraylast
arraysort arrayreversesort arraydistinct arrayuniq arrayenumerate arrayconcat
arrayslice arraypushback arraypushfront arrayreverse arraycompact arrayzip
arrayflatten arrayintersect arrayelement arrayreduce has hasall hasany indexof
countequal empty notempty emptyarraystring length tuple tupleelement map mapkeys
mapvalues mapcontains jsonextract jsonextractstring jsonextractint jsonextractuint
jsonextractfloat jsonextractbool jsonextractraw jsonextractkeys jsonextractarrayraw
jsonhas jsonlength jsontype isvalidjson simplejsonextractstring
simplejsonextractraw simplejsonhas tojsonstring cityhash64 siphash64 xxhash64
murmurhash3_64 sipHash128 md5 sha1 sha256 halfmd5 generateuuidv4 rand rand64
randcanonical tolowcardinality materialize identity ignore ifnotfinite
formatreadablesize formatreadablequantity formatreadabletimedelta bar
""".lower()

#: Every function a query may call (compared case-insensitively).
ALLOWED_FUNCTIONS = frozenset(_FUNCTIONS_TEXT.split())
#: Aggregate combinators: ``countIf``, ``sumArray``, ``uniqDistinct``, ``avgOrNull``...
_COMBINATORS = ("if", "array", "distinct", "ornull", "ordefault")

_IDENTIFIER_OK = re.compile(r"^[^\x00-\x1f\x7f\"`'\\]{1,200}$")
# The last lexical check runs on generated SQL, which has only these forms of quoting.
_GEN_TOKEN = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\"\")*\"|[^'\"]+", re.DOTALL)
_GEN_FORBIDDEN = re.compile(r";|--|#|/\*|\*/|`|\$|\\|\{|\}")
_GEN_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_GEN_KEYWORDS = frozenset({"IN", "AS", "FROM", "JOIN", "AND", "OR", "NOT", "ON", "USING",
                           "EXISTS", "OVER", "WHERE", "HAVING", "THEN", "ELSE", "WHEN",
                           "SELECT", "ALL", "DISTINCT", "BY", "ANY", "INTERVAL", "CAST",
                           "WITH", "UNION", "INTERSECT", "EXCEPT", "IS", "LIKE", "ILIKE",
                           "BETWEEN", "CASE", "END", "TUPLE", "ARRAY", "LIMIT", "OFFSET",
                           "PARTITION", "ROWS", "RANGE", "GROUP", "ORDER", "ASC", "DESC",
                           "PREWHERE", "FINAL", "SAMPLE", "LEFT", "RIGHT", "INNER",
                           "OUTER", "FULL", "CROSS", "FILTER"})  # fmt: skip


#: Type names written with brackets (``CAST(x AS Nullable(String))``); not functions.
_TYPE_NAMES = frozenset({"nullable", "lowcardinality", "datetime", "datetime64", "decimal",
                         "decimal32", "decimal64", "decimal128", "decimal256", "fixedstring",
                         "array", "tuple", "map", "enum8", "enum16"})  # fmt: skip


class SqlRefusedError(Exception):
    """The query is not allowed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VerifiedQuery:
    """SQL generated from a verified tree (safe to run), and the datasources it reads."""

    sql: str
    tables: frozenset[str]


def _function_allowed(name: str) -> bool:
    low = name.lower()
    if low in ALLOWED_FUNCTIONS:
        return True
    for suffix in _COMBINATORS:  # one level of combinator on an allowed aggregate
        if low.endswith(suffix) and low[: -len(suffix)] in ALLOWED_FUNCTIONS:
            return True
    return False


def _pre_check(query: str) -> None:
    """Refuse texts too long, with too many tokens or nested too deep, before parsing."""
    if len(query) > MAX_QUERY_CHARS:
        raise SqlRefusedError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query:
        raise SqlRefusedError("the query contains a NUL character")
    try:
        tokens = ClickHouse().tokenize(query)
    except (_SqlglotTokenError, ValueError, RecursionError):
        raise SqlRefusedError("the query could not be parsed (bad quoting or token)") from None
    if len(tokens) > MAX_TOKENS:
        raise SqlRefusedError(f"the query has more than {MAX_TOKENS} tokens")
    depth = 0
    opening = (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE)
    closing = (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE)
    for token in tokens:
        if token.token_type in opening:
            depth += 1
            if depth > MAX_DEPTH:
                raise SqlRefusedError(f"the query nests brackets deeper than {MAX_DEPTH}")
        elif token.token_type in closing:
            depth -= 1
        elif token.token_type == TokenType.SEMICOLON and token is not tokens[-1]:
            raise SqlRefusedError("only one statement is allowed per query")


def _parse(query: str) -> _Node:
    try:
        statements = [s for s in sqlglot.parse(query, read="clickhouse") if s is not None]
    except RecursionError:
        raise SqlRefusedError("the query is nested too deeply") from None
    except (SqlglotError, ValueError):
        raise SqlRefusedError(
            "the query could not be parsed as one SELECT (only SELECT, WITH and "
            "DESCRIBE queries are allowed: read-only SQL API)"
        ) from None
    if len(statements) != 1:
        raise SqlRefusedError("only one statement is allowed per query")
    return statements[0]


def verify_sql(
    query: str,
    readable: Iterable[str],
    database: str,
    *,
    known: Iterable[str] = (),
) -> VerifiedQuery:
    """Prove ``query`` is one harmless read; return SQL to run (tables in ``database``).

    ``readable`` are the table names the token may read, ``known`` every table name
    the server has (a known table outside ``readable`` is a 403, others a 400).
    """
    _pre_check(query)
    tree = _parse(query)
    readable_set, known_set = frozenset(readable), frozenset(known)
    tables = _Verifier(readable_set, known_set, database).check(tree)
    try:
        sql = tree.sql(dialect="clickhouse", comments=False)
    except Exception:  # noqa: BLE001 - sqlglot cannot write it: refuse rather than guess
        raise SqlRefusedError("the query uses SQL this server cannot re-check") from None
    # The generated text must parse back to a tree that passes the same checks (its
    # tables are already qualified: only ``database`` may appear as a qualifier) and
    # generate exactly itself; then the last lexical check.
    again = _parse(sql)
    _Verifier(readable_set, known_set, database, requalify=False).check(again)
    if again.sql(dialect="clickhouse", comments=False) != sql:
        raise SqlRefusedError("the query uses SQL this server cannot re-check")
    _lexical_check(sql)
    return VerifiedQuery(sql, frozenset(tables))


def _lexical_check(sql: str) -> None:
    for m in _GEN_TOKEN.finditer(sql):
        piece = m.group()
        if piece[0] == "'":
            continue
        if piece[0] == '"':
            if re.match(r"\s*\(", sql[m.end() :]):
                raise SqlRefusedError("a quoted name cannot be called as a function")
            continue
        if _GEN_FORBIDDEN.search(piece):
            raise SqlRefusedError("the query uses SQL this server cannot re-check")
        for name in _GEN_CALL.findall(piece):
            low = name.lower()
            if name in _GEN_KEYWORDS or low in _ALLOWED_TABLE_FUNCTIONS or low in _TYPE_NAMES:
                continue
            if not _function_allowed(name):
                raise SqlRefusedError(f"function '{name}' is not allowed")


class _Verifier:
    """Walks one parse tree; qualifies datasource tables with ``database`` in place."""

    def __init__(
        self, readable: frozenset[str], known: frozenset[str], database: str,
        *, requalify: bool = True,
    ) -> None:  # fmt: skip
        self.readable = readable
        self.known = known
        self.database = database
        self.requalify = requalify
        self.tables: set[str] = set()

    def check(self, tree: _Node) -> set[str]:
        if not isinstance(tree, exp.Query | exp.Describe):
            raise SqlRefusedError(
                "only SELECT, WITH and DESCRIBE queries are allowed (read-only SQL API)"
            )
        if isinstance(tree, exp.Describe):
            target = tree.this
            extra = {k for k, v in tree.args.items() if v and k != "this"}
            if extra - {"kind"} or not isinstance(target, exp.Table):
                raise SqlRefusedError("only DESCRIBE <datasource> is allowed")
            if isinstance(target.this, exp.Func):
                raise SqlRefusedError("only DESCRIBE <datasource> is allowed")
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE) if isinstance(c.this, exp.Query)}
        clash = ctes & (self.known | self.readable)
        if clash:  # a CTE must not be mistaken for (or hide) a datasource
            raise SqlRefusedError(f"a WITH name cannot be a datasource name: '{min(clash)}'")
        for node in list(tree.walk()):
            self._node(node, ctes)
        return self.tables

    def _node(self, node: _Node, ctes: set[str]) -> None:
        e = exp
        name = type(node).__name__
        if name not in _ALLOWED_NODES and not isinstance(node, e.Func):
            raise SqlRefusedError(f"this SQL construct is not allowed here: {name}")
        denied = {k for k, v in node.args.items() if v not in (None, False, [], "")}
        denied &= _DENIED_ARGS
        if denied:
            word = sorted(denied)[0].rstrip("_").upper()
            raise SqlRefusedError(f"{word} is not allowed in the SQL API")
        if isinstance(node, e.Identifier):
            if not _IDENTIFIER_OK.match(node.name):
                raise SqlRefusedError("names may not contain quotes, backslashes or "
                                      "control characters")  # fmt: skip
        elif isinstance(node, e.Table):
            self._table(node, ctes)
        elif isinstance(node, e.Column):
            if node.args.get("db") or node.args.get("catalog"):
                raise SqlRefusedError("database-qualified names are not allowed", 403)
            qualifier = node.args.get("table")
            if qualifier is not None and qualifier.name not in _names_in_scope(node, ctes):
                raise SqlRefusedError(
                    f"'{qualifier.name}' names no table of the query (use a datasource name "
                    "or alias from its FROM or JOIN)"
                )
        elif isinstance(node, e.In):
            if node.args.get("field") is not None or node.args.get("unnest") is not None:
                raise SqlRefusedError("IN needs a list of values or a subquery, "
                                      "not a table name")  # fmt: skip
            if node.args.get("is_global"):
                raise SqlRefusedError("GLOBAL IN is not allowed")
            # ClickHouse strips brackets around a lone name on the right of IN and reads
            # it as a table (``x IN ((system.one))``): no name there outside a subquery.
            for item in [*node.expressions, node.args.get("query")]:
                if item is not None and _has_name_outside_subquery(item):
                    raise SqlRefusedError("IN needs a list of values or a subquery, "
                                          "not a name")  # fmt: skip
        elif isinstance(node, e.Dot):
            if not isinstance(node.expression, e.Literal):
                raise SqlRefusedError("database-qualified names are not allowed", 403)
        elif isinstance(node, e.Join):
            if node.args.get("global_") or node.args.get("method"):
                raise SqlRefusedError("this kind of JOIN is not allowed")
        elif isinstance(node, e.Literal):
            if not isinstance(node.this, str):
                raise SqlRefusedError("the query uses SQL this server cannot re-check")
        elif (
            isinstance(node, e.Func)
            and name not in _ALLOWED_NODES  # operators (And, Or...) are Funcs in sqlglot
            and not isinstance(node.parent, e.Table)
        ):
            called = _call_name(node)
            if called is None:
                if name not in _SYNTAX_FUNCS:
                    raise SqlRefusedError(f"this SQL construct is not allowed here: {name}")
            elif not _function_allowed(called):
                raise SqlRefusedError(f"function '{called}' is not allowed", 403)

    def _table(self, node: exp.Table, ctes: set[str]) -> None:
        e = exp
        target = node.this
        if isinstance(target, e.Func):
            called = _call_name(target) or type(target).__name__
            if called.lower() not in _ALLOWED_TABLE_FUNCTIONS:
                raise SqlRefusedError(f"table function '{called}' is not allowed", 403)
            if node.args.get("db") or node.args.get("catalog"):
                raise SqlRefusedError("database-qualified names are not allowed", 403)
            return
        if not isinstance(target, e.Identifier):
            raise SqlRefusedError("the query uses SQL this server cannot re-check")
        name = target.name
        catalog = node.args.get("catalog")
        db = node.args.get("db")
        if catalog is not None or (db is not None and (self.requalify or db.name != self.database)):
            qualified = ".".join(p.name for p in (catalog, db, target) if p is not None)
            raise SqlRefusedError(
                f"table '{qualified}' is not readable: use datasource names only", 403
            )
        if db is None and name in ctes:
            return
        if name not in self.readable:
            if name in self.known:
                raise SqlRefusedError(f"the token has no DATASOURCES:READ scope on '{name}'", 403)
            raise SqlRefusedError(f"unknown datasource '{name}'", 400)
        self.tables.add(name)
        if self.requalify:
            node.set("db", e.to_identifier(self.database))
        elif db is None:
            raise SqlRefusedError("the query uses SQL this server cannot re-check")


def _has_name_outside_subquery(node: _Node) -> bool:
    """Whether ``node`` holds a column, dotted name or bare name not in a subquery."""
    if isinstance(node, exp.Query | exp.Subquery):
        return False  # checked as a query in its own right
    if isinstance(node, exp.Column | exp.Dot | exp.Identifier | exp.Table | exp.Var):
        return True
    return any(_has_name_outside_subquery(child) for child in node.iter_expressions())


def _names_in_scope(node: _Node, ctes: set[str]) -> set[str]:
    """Table names a column qualifier may use where ``node`` is: every enclosing SELECT's
    FROM and JOIN sources (name or alias; outer ones for correlated subqueries), the
    query's CTEs, and the parameters of enclosing lambdas (``x -> x.a``)."""
    names = set(ctes)
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Select):
            sources = [parent.args.get("from_") or parent.args.get("from")]
            sources += parent.args.get("joins") or []
            for source in sources:
                if source is None:
                    continue
                target = source.this
                if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
                    names.add(target.name)
                if target is not None and target.alias:
                    names.add(target.alias)
        elif isinstance(parent, exp.Lambda):
            names.update(p.name for p in parent.expressions)
        parent = parent.parent
    return names


def _call_name(node: _Node) -> str | None:
    """The name ClickHouse will see for a function node (None: not a call)."""
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        return str(node.name)
    text = node.sql(dialect="clickhouse", comments=False)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", text)
    return m.group(1) if m else None


_ALLOWED_NODES = frozenset({
    "Select", "Union", "Intersect", "Except", "Subquery", "With", "CTE", "TableAlias",
    "From", "Join", "Where", "Group", "Having", "Order", "Ordered", "Limit", "Offset",
    "Distinct", "Column", "Identifier", "Literal", "Alias", "Star", "Paren", "Table",
    "Tuple", "Null", "Boolean", "Neg", "Not", "And", "Or", "Xor", "EQ", "NEQ", "GT",
    "GTE", "LT", "LTE", "NullSafeEQ", "NullSafeNEQ", "Add", "Sub", "Mul", "Div", "Mod",
    "IntDiv", "Like", "ILike", "Is", "In", "Between", "DataType", "DataTypeParam",
    "Interval", "Var", "Window", "WindowSpec", "Lambda", "Bracket", "Dot", "DPipe",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitwiseLeftShift",
    "BitwiseRightShift", "Escape", "RawString", "Final", "Describe", "Qualify", "PreWhere",
    "Filter", "IgnoreNulls", "RespectNulls", "Slice",
    "JSONPath", "JSONPathKey", "JSONPathRoot", "JSONPathSubscript", "JSONPathWildcard",
})  # fmt: skip
#: Function nodes that ClickHouse sees as syntax, not as a call of a name.
_SYNTAX_FUNCS = frozenset({"Case", "If", "Array", "Tuple", "CurrentDate", "CurrentTimestamp"})
_DENIED_ARGS = frozenset({
    "settings", "format", "into", "locks", "hint", "hints", "options", "for_",
    "operation_modifiers", "connect", "pivots", "system_time", "version", "partition",
    "changes", "udfs", "recursive", "properties", "cluster", "distribute", "sort",
    "pattern", "when", "indexed", "laterals", "match", "kind_into", "sample", "rows_from",
    "only", "search", "cycle", "exclude", "as_json", "style",
})  # fmt: skip


def check_sql(query: str, explain_ast: Callable[[str], str] | None = None) -> set[str]:
    """Refuse anything but one read-only statement; return the tables it reads.

    Kept for callers of the old API: ``explain_ast`` is ignored (no query text reaches
    ClickHouse to be checked any more), and every bare table name counts as readable.
    """
    del explain_ast
    _pre_check(query)
    names = {
        t.name for t in _parse(query).find_all(exp.Table) if isinstance(t.this, exp.Identifier)
    }
    return set(verify_sql(query, names, "default").tables)
