"""What the benchmarks measure: each shipper, built against the loopback sink, by one key.

A ``Candidate`` knows how to build its handler (or structlog logger) pointed at a sink URL,
which of the sink's protocols it speaks (``benchmarks.sink.PATHS``), whether it is called
through ``logging`` or structlog, and how to *settle* it (wait until what it buffered has been
delivered, with the library's own flush) and close it.  Peers are imported inside their
factories, so one that is not installed raises ``ImportError`` and is reported as
``n/a (not installed)`` instead of stopping the run.

tblog itself is imported the same way, so a child process that measures a peer never loads
it.  Every candidate runs with its library's defaults, except where a row says otherwise:
``burst > 0`` (the end-to-end rows) sizes each library's buffer to hold the whole burst where
it has such a knob, as tblog's own row always did, so that row measures CPU rather than drop
policy.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOKEN = "p.benchmark-token-0123456789abcdef"
APP = "bench"


@dataclass
class Built:
    """One candidate, ready to log into: ``target`` is a ``logging.Handler`` or a structlog
    bound logger (see ``Candidate.api``)."""

    target: Any
    settle: Callable[[], None]
    close: Callable[[], None]


@dataclass(frozen=True)
class Candidate:
    key: str  # short name, for the command line of ``benchmarks.isolated``
    name: str  # the row label
    build: Callable[[str, int], Built]  # (sink URL, burst) -> Built
    protocol: str | None = None  # the sink protocol it ships (None: it ships nothing)
    api: str = "logging"  # "logging": logger.info(...); "structlog": log.info(...)
    # Delivery does one synchronous HTTP request per record (on the caller's thread, or on a
    # listener that settling waits for): measured on fewer calls.
    slow: bool = False
    # That request is made on the caller's thread: against a failing endpoint every call
    # waits for it, so the failure rows use fewer calls still.
    synchronous: bool = False


def _nothing() -> None:
    pass


def _ignore(_: object) -> None:
    pass


# -- logging handlers ---------------------------------------------------------------------


def _null(url: str, burst: int) -> Built:
    return Built(logging.NullHandler(), _nothing, _nothing)


def _stdlib_queue(url: str, burst: int) -> Built:
    q: queue.Queue[Any] = queue.Queue(-1)
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    return Built(logging.handlers.QueueHandler(q), q.join, listener.stop)


def _tblog_sizing(burst: int) -> dict[str, Any]:
    # The whole burst is buffered at once: size the buffer for it (the row measures CPU).
    return {"max_buffer_size": 10 * burst, "max_buffer_bytes": 2**31} if burst else {}


def _tblog(url: str, burst: int) -> Built:
    import tblog

    h = tblog.TinybirdLoggingHandler(url, TOKEN, APP, **_tblog_sizing(burst))
    return Built(h, lambda: _ignore(h.flush(30)), h.close)


#: The sampling the "sampling on" row configures: half of the measured INFO calls are kept
#: (each with its ``sample_rate``), half are counted and dropped on the caller's thread.
SAMPLE = {"": {"INFO": 0.5}}


def _tblog_sampled(url: str, burst: int) -> Built:
    import tblog

    h = tblog.TinybirdLoggingHandler(url, TOKEN, APP, sample=SAMPLE, **_tblog_sizing(burst))
    return Built(h, lambda: _ignore(h.flush(30)), h.close)


def _tblog_zlib(url: str, burst: int) -> Built:
    """tblog without the ``speedups`` extra: request bodies gzipped by the stdlib's zlib."""
    from tblog._event import encode as _encode

    _encode._fast_gzip = None  # this child process only (end-to-end rows run one each)
    return _tblog(url, burst)


def _tblog_pure(url: str, burst: int) -> Built:
    """tblog installed where it could not compile ``tblog._speedups`` (no C compiler), without
    the ``speedups`` extra: every step in Python."""
    os.environ["TBLOG_PURE_PYTHON"] = "1"  # read when tblog is first imported, in this child
    from tblog._event import compiled

    if compiled.SPEEDUPS is not None:
        raise RuntimeError("tblog was imported before TBLOG_PURE_PYTHON was set")
    return _tblog_zlib(url, burst)


def _tblog_queue(url: str, burst: int, q: Any = None) -> Built:
    import tblog

    q = queue.Queue(-1) if q is None else q
    h = tblog.TinybirdLoggingQueueHandler(q, url, TOKEN, APP, **_tblog_sizing(burst))
    # flush() also covers what still waits in the queue: a mark goes through it
    return Built(h, lambda: _ignore(h.flush(30)), h.close)


def _tblog_simple_queue(url: str, burst: int) -> Built:
    """The queue handler on a ``queue.SimpleQueue``, whose ``put`` is written in C."""
    return _tblog_queue(url, burst, queue.SimpleQueue())


def _tinybird_sdk(url: str, burst: int) -> Built:
    from tb.logger import TinybirdLoggingHandler  # the SDK's code order: (token, api_url, ...)

    h = TinybirdLoggingHandler(TOKEN, url, APP)
    return Built(h, _nothing, h.close)


def _tinybird_sdk_queue(url: str, burst: int) -> Built:
    # As the SDK's README shows it: a multiprocessing Queue; the handler starts its own
    # QueueListener, which runs the SDK's synchronous handler (one request per record).
    from multiprocessing import Queue

    from tb.logger import TinybirdLoggingQueueHandler  # (queue, token, api_url, app_name)

    q: Any = Queue(-1)
    h = TinybirdLoggingQueueHandler(q, TOKEN, url, APP)

    def settle() -> None:  # the listener's stop() drains the queue; start it again
        h.listener.stop()
        h.listener.start()

    def close() -> None:
        h.listener.stop()
        h.close()
        q.close()
        q.join_thread()

    return Built(h, settle, close)


def _otel(url: str, burst: int) -> Built:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    sizing = {"max_queue_size": max(2048, burst)} if burst else {}
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"), **sizing)
    )
    # LoggingHandler.flush() only starts a thread that flushes: settle on the provider.
    return Built(
        LoggingHandler(logger_provider=provider),
        lambda: _ignore(provider.force_flush()),
        provider.shutdown,
    )


def _logtail(url: str, burst: int) -> Built:
    from logtail import LogtailHandler

    # ``host`` is the URL it POSTs to (msgpack).  Its queue holds ``buffer_capacity`` (1,000)
    # records and drops the rest by default; for a burst it is told to block instead.
    sizing = {"drop_extra_events": False} if burst else {}
    h = LogtailHandler(source_token=TOKEN, host=f"{url}/logtail", **sizing)
    return Built(h, h.flush, h.close)


def _logtide(url: str, burst: int) -> Built:
    from logtide_sdk import ClientOptions, LogTideClient, LogTideHandler

    # Ingest is POST {api_url}/api/v1/ingest, JSON {"logs": [...]}.  The client sends a batch
    # on the logging thread once ``batch_size`` (100) entries are buffered, and from a timer
    # thread every ``flush_interval`` (5 s).
    sizing = {"max_buffer_size": max(10_000, burst)} if burst else {}
    client = LogTideClient(ClientOptions(api_url=url, api_key="lp_benchmark_key", **sizing))
    return Built(LogTideHandler(client=client, service=APP), client.flush, client.close)


# -- structlog ----------------------------------------------------------------------------


def _structlog_logger(last: Any) -> Any:
    """A structlog logger with the chain of the README's structlog section, ending in ``last``.

    Built with ``wrap_logger`` rather than ``structlog.configure`` so that candidates do not
    share global state; ``.bind()`` returns the concrete bound logger that a cached proxy
    resolves to.  A chain that ends in a processor returning the event dict hands it to the
    wrapped logger as keyword arguments: ``ReturnLogger`` is structlog's cheapest one.
    """
    import structlog

    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        last,
    ]
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    ).bind()


def _tblog_structlog(url: str, burst: int) -> Built:
    from tblog.structlog import TinybirdProcessor

    processor = TinybirdProcessor(url, TOKEN, APP, **_tblog_sizing(burst))
    return Built(
        _structlog_logger(processor), lambda: _ignore(processor.flush(30)), processor.close
    )


def _drop_event(logger: Any, method_name: str, event_dict: Any) -> Any:
    import structlog

    raise structlog.DropEvent


def _structlog_drop(url: str, burst: int) -> Built:
    return Built(_structlog_logger(_drop_event), _nothing, _nothing)


CANDIDATES: dict[str, Candidate] = {
    c.key: c
    for c in (
        Candidate("null", "logging.NullHandler", _null),
        Candidate("stdlib-queue", "stdlib QueueHandler + QueueListener", _stdlib_queue),
        Candidate("tblog", "tblog TinybirdLoggingHandler", _tblog, "tinybird"),
        Candidate(
            "tblog-zlib",
            "tblog TinybirdLoggingHandler, zlib (the default install: without `tblog[speedups]`)",
            _tblog_zlib, "tinybird",
        ),
        Candidate(
            "tblog-pure", "tblog TinybirdLoggingHandler, pure Python (no C compiler; zlib)",
            _tblog_pure, "tinybird",
        ),
        Candidate(
            "tblog-sampled", "tblog TinybirdLoggingHandler, sampling on (INFO at 0.5)",
            _tblog_sampled, "tinybird",
        ),
        Candidate("tblog-queue", "tblog TinybirdLoggingQueueHandler", _tblog_queue, "tinybird"),
        Candidate(
            "tblog-simple-queue", "tblog TinybirdLoggingQueueHandler on a `queue.SimpleQueue`",
            _tblog_simple_queue, "tinybird",
        ),
        Candidate(
            "tblog-structlog", "tblog structlog TinybirdProcessor", _tblog_structlog, "tinybird",
            api="structlog",
        ),
        Candidate(
            "sdk", "Tinybird SDK TinybirdLoggingHandler", _tinybird_sdk, "tinybird", slow=True,
            synchronous=True,
        ),
        Candidate(
            "sdk-queue", "Tinybird SDK TinybirdLoggingQueueHandler", _tinybird_sdk_queue,
            "tinybird", slow=True,
        ),
        Candidate(
            "otel", "OpenTelemetry LoggingHandler + BatchLogRecordProcessor", _otel, "otlp"
        ),
        Candidate("logtail", "logtail-python LogtailHandler", _logtail, "logtail"),
        Candidate("logtide", "logtide-sdk LogTideHandler", _logtide, "logtide"),
        Candidate(
            "structlog-drop", "structlog alone (same chain, last processor raises DropEvent)",
            _structlog_drop, api="structlog",
        ),
    )
}  # fmt: skip


def not_available(exc: Exception) -> str:
    """How a candidate that could not be built is printed."""
    if isinstance(exc, ImportError):
        return "n/a (not installed)"
    return f"n/a ({type(exc).__name__}: {exc})"[:120]
