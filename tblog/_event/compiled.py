"""The optional compiled steps (``tblog._speedups``), or None: which one runs is decided here.

``tblog/_speedups.c`` compiles the handler's snapshot of a common record (caller's thread),
and the sender's encoding loop for it and its sum of snapshot sizes;
``TinybirdLoggingHandler.emit``, ``EventBuilder.encode_batch`` and ``snapshot_size`` hold the
pure-Python reference of each, which runs when the
module was not built (no C compiler, ``TBLOG_PURE_PYTHON=1`` at build time, another Python
implementation) or when ``TBLOG_PURE_PYTHON`` is set (and not ``0``) at import time.  Tests
hold the two paths to the same snapshots and the same bytes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tblog import context
from tblog._event.snapshot import BASE_ATTRS, CTX_ATTR, FMT_KEY, SNAPSHOT_OVERHEAD

__all__ = ["SPEEDUPS", "load"]


def load() -> Any:
    """``tblog._speedups``, configured; None when it is not there or not wanted."""
    if os.environ.get("TBLOG_PURE_PYTHON", "").strip() not in ("", "0"):
        return None
    try:
        from tblog import _speedups  # noqa: PLC0415 - optional
    except ImportError:
        return None
    _speedups.configure(
        CTX_ATTR, SNAPSHOT_OVERHEAD, BASE_ATTRS, FMT_KEY, context.current, context.capture,
        sys.modules, context.OTEL_MODULE,
    )  # fmt: skip
    return _speedups


#: The compiled module, or None (then the Python steps run).
SPEEDUPS: Any = load()
