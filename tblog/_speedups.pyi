"""Types of the optional compiled module built from ``_speedups.c`` (see that file)."""

from collections.abc import Callable
from typing import Any

def configure(
    ctx_attr: str,
    overhead: int,
    base_attrs: int,
    fmt_key: str,
    current: Callable[[], Any],
    capture: Callable[[], Any],
    modules: dict[str, Any],
    otel: str,
    /,
) -> None: ...
def snapshot_sizes(snaps: list[Any], exc_type: type, measure: Callable[[Any], int], /) -> int: ...
def snapshot(attrs: dict[str, Any], plain: Any, /) -> tuple[dict[str, Any] | None, int]: ...
def merge_messages(snaps: list[Any], fallback: Callable[[Any], str], /) -> list[str]: ...
def encode_lines(
    snaps: list[Any], messages: list[str], flags: list[bool] | None, ctx: Any, /
) -> tuple[list[bytes], int]: ...
