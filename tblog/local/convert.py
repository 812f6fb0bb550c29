"""JSON row -> typed row of a datasource, or the reasons it belongs in quarantine.

A ``RowMapper`` is compiled once per datasource: for each column, its JSONPath and a
converter for its ClickHouse type.  ``map`` returns the row to insert (a dict of
column values, JSON-ready; columns with a DEFAULT are left out when the value is
missing, so ClickHouse computes the default) or the failing columns and messages,
worded like Tinybird's (``value 'x' on column 'n' is not Int32``).  An object mapped
to a String column becomes its JSON text.  ClickHouse stays the final judge: the
store re-checks rows it rejects one by one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from tblog._event.encode import dumps
from tblog.local.datafile import Column, Datasource

__all__ = ["RowMapper", "to_text"]

_MISSING = object()
_INT_RANGES = {
    "UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1), "UInt128": (0, 2**128 - 1), "UInt256": (0, 2**256 - 1),
    "Int8": (-(2**7), 2**7 - 1), "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1),
    "Int128": (-(2**127), 2**127 - 1), "Int256": (-(2**255), 2**255 - 1),
}  # fmt: skip
_DATE = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?$"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")

Converter = Callable[[Any], Any]


class _BadValueError(Exception):
    """A value that does not fit its column type."""


def to_text(value: Any) -> str:
    """A JSON value as the text Tinybird shows for it (strings as they are)."""
    if isinstance(value, str):
        return value
    return dumps(value).decode("utf-8")


def _strip(type_: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    return type_[len(prefix) : -1].strip() if type_.startswith(prefix) else None


def _bare(type_: str) -> str:
    """``type_`` without its ``LowCardinality(...)`` and ``Nullable(...)`` wrappers."""
    while True:
        inner = _strip(type_, "LowCardinality") or _strip(type_, "Nullable")
        if inner is None:
            return type_
        type_ = inner


def _string(value: Any) -> Any:
    return to_text(value)


def _int_converter(lo: int, hi: int) -> Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and value.strip().lstrip("+-").isdigit()
        ):
            number = int(value)
        else:
            raise _BadValueError
        if not lo <= number <= hi:
            raise _BadValueError
        return number

    return convert


def _float(value: Any) -> Any:
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise _BadValueError
        return value
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise _BadValueError from None
        return value
    raise _BadValueError


def _bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "0", "1"):
        return value.lower() in ("true", "1")
    raise _BadValueError


def _datetime(value: Any) -> Any:
    if isinstance(value, str):
        if _DATE.match(value.strip()):
            return value.strip()
        raise _BadValueError
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value
    raise _BadValueError


def _uuid(value: Any) -> Any:
    if isinstance(value, str) and _UUID.match(value):
        return value
    raise _BadValueError


def _passthrough(value: Any) -> Any:
    return value


def converter_for(type_: str) -> tuple[Converter, bool]:
    """The converter of ``type_`` and whether it accepts null."""
    inner = _strip(type_, "Nullable")
    if inner is not None:
        return converter_for(inner)[0], True
    inner = _strip(type_, "LowCardinality")
    if inner is not None:
        return converter_for(inner)
    inner = _strip(type_, "Array")
    if inner is not None:
        element, _ = converter_for(inner)

        def array(value: Any) -> Any:
            if not isinstance(value, list):
                raise _BadValueError
            return [element(v) if v is not None else None for v in value]

        return array, False
    base = type_.split("(", 1)[0]
    if base in ("String", "FixedString"):
        return _string, False
    if base in _INT_RANGES:
        return _int_converter(*_INT_RANGES[base]), False
    if base in ("Float32", "Float64", "Decimal", "Decimal32", "Decimal64", "Decimal128"):
        return _float, False
    if base in ("Bool", "Boolean"):
        return _bool, False
    if base in ("Date", "Date32", "DateTime", "DateTime64"):
        return _datetime, False
    if base == "UUID":
        return _uuid, False
    return _passthrough, False


def _fast_type(type_: str) -> type | None:
    """The Python type whose values fit ``type_`` as they are (no check needed)."""
    type_ = _bare(type_)
    if type_ == "String":
        return str
    if type_ in ("Float32", "Float64"):
        return float
    return None


class _Plan:
    __slots__ = ("column", "convert", "fast", "has_default", "key", "name", "nullable", "path")

    def __init__(self, column: Column) -> None:
        self.column = column
        self.name = column.name
        self.path = column.path
        self.key = self.path[0] if len(self.path) == 1 else None
        self.convert, self.nullable = converter_for(column.type)
        self.has_default = column.default_kind == "DEFAULT"
        self.fast = _fast_type(column.type)


def _fast_condition(type_: str) -> str:
    """A Python expression on ``v`` true when ``v`` fits ``type_`` as it is."""
    type_ = _bare(type_)
    if type_ == "String":
        return "type(v) is str"
    if type_ in _INT_RANGES:
        lo, hi = _INT_RANGES[type_]
        return f"type(v) is int and {lo} <= v <= {hi}"
    if type_ in ("Float32", "Float64"):
        return "type(v) is float"
    if type_.split("(", 1)[0] in ("Date", "Date32", "DateTime", "DateTime64"):
        return "type(v) is str and _date(v) is not None"
    if type_ == "UUID":
        return "type(v) is str and _uuid(v) is not None"
    return "False"


def _compile(plans: list[_Plan]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """One straight-line function mapping a row that fits; None when it needs the slow path.

    Generated once per datasource: the common row (every value of the right JSON type)
    then costs a dict lookup and a type check per column, without a Python loop.
    """
    env: dict[str, Any] = {"M": _MISSING, "_date": _DATE.match, "_uuid": _UUID.match}
    lines = ["def fast(obj):", "    row = {}"]
    for i, plan in enumerate(plans):
        env[f"conv{i}"] = plan.convert
        first, *rest = plan.path
        lines.append(f"    v = obj.get({first!r}, M)")
        for key in rest:
            lines.append(f"    v = v.get({key!r}, M) if type(v) is dict else M")
        lines.append(f"    if {_fast_condition(plan.column.type)}:")
        lines.append(f"        row[{plan.name!r}] = v")
        lines.append("    elif v is M or v is None:")
        if plan.has_default:
            lines.append("        pass")
        elif plan.nullable:
            lines.append(f"        row[{plan.name!r}] = None")
        else:
            lines.append("        return None")
        lines.append("    else:")
        lines.append(f"        row[{plan.name!r}] = conv{i}(v)")
    lines.append("    return row")
    exec("\n".join(lines), env)  # noqa: S102 - code built here from parsed column names (repr)
    fast: Callable[[dict[str, Any]], dict[str, Any] | None] = env["fast"]
    return fast


class RowMapper:
    """Maps JSON objects to the insertable columns of one datasource."""

    def __init__(self, datasource: Datasource) -> None:
        self.datasource = datasource
        self.plans = [_Plan(c) for c in datasource.columns if c.insertable]
        self._fast = _compile(self.plans)

    def map(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """``(row, errors)``: errors is a list of (column, message); empty when the row fits."""
        try:
            fast = self._fast(obj)
        except _BadValueError:
            fast = None
        if fast is not None:
            return fast, []
        return self._map_slow(obj)

    def _map_slow(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        row: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for plan in self.plans:
            name = plan.name
            value: Any
            if plan.key is not None:
                value = obj.get(plan.key, _MISSING)
                if type(value) is plan.fast:
                    row[name] = value
                    continue
            else:
                value = obj
                for key in plan.path:
                    value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING or value is None:
                if plan.has_default:
                    continue
                if plan.nullable:
                    row[name] = None
                    continue
                where = plan.column.jsonpath or name
                errors.append((name, f"column '{name}' has no DEFAULT and the row has no {where}"))
                continue
            try:
                row[name] = plan.convert(value)
            except _BadValueError:
                shown = to_text(value)
                if len(shown) > 200:
                    shown = shown[:200] + "..."
                errors.append((name, f"value '{shown}' on column '{name}' is not "
                                     f"{plan.column.type}"))  # fmt: skip
        return row, errors

    def raw_values(self, obj: dict[str, Any]) -> dict[str, str | None]:
        """Each column's source value as text, for the quarantine table."""
        out: dict[str, str | None] = {}
        for plan in self.plans:
            value: Any = obj
            for key in plan.path:
                value = value.get(key) if isinstance(value, dict) else None
            out[plan.column.name] = None if value is None else to_text(value)
        return out
