"""tblog: ship Python logs and events to Tinybird through the Events API.

The public API is exactly what ``__all__`` lists; everything in a ``_private``
module is internal and may change without notice.
"""

from __future__ import annotations

from tblog._delivery.runtime import flushing
from tblog._delivery.sender import flush
from tblog._version import __version__
from tblog.context import (
    bind,
    bound,
    get_bound,
    get_span_id,
    get_trace_id,
    new_span_id,
    new_trace_id,
    set_span_id,
    set_trace_id,
    trace,
    unbind,
)
from tblog.datasource import API, AsyncAPI, AsyncDatasource, Datasource
from tblog.formatters import TinybirdJsonFormatter
from tblog.handlers import (
    TinybirdLoggingHandler,
    TinybirdLoggingQueueHandler,
    TinybirdQueueListener,
)

__all__ = [
    "API",
    "AsyncAPI",
    "AsyncDatasource",
    "Datasource",
    "TinybirdJsonFormatter",
    "TinybirdLoggingHandler",
    "TinybirdLoggingQueueHandler",
    "TinybirdQueueListener",
    "__version__",
    "bind",
    "bound",
    "flush",
    "flushing",
    "get_bound",
    "get_span_id",
    "get_trace_id",
    "new_span_id",
    "new_trace_id",
    "set_span_id",
    "set_trace_id",
    "trace",
    "unbind",
]
