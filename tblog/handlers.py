"""The logging handlers: ``TinybirdLoggingHandler`` and the queue pair for the SDK's queue path.

``TinybirdLoggingHandler.emit`` is the hot path.  On the caller's thread it
checks the re-entry guard and the ignored loggers, takes a cheap snapshot of the
record and its trace context, and appends it to its channel of the shared
sender.  It never does I/O, never waits, and never raises into the application.

``TinybirdLoggingQueueHandler`` is a drop-in for the Tinybird SDK class of that
name: it puts prepared records (message merged, exception as text, trace context
attached, picklable for a ``multiprocessing.Queue``) on a queue, and its own
``TinybirdQueueListener`` feeds them to an internal ``TinybirdLoggingHandler``.
``TinybirdQueueListener`` also serves ``dictConfig``'s ``listener:`` key on 3.12+.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import logging.handlers
import os
import queue as _queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tblog import _config, _diag, context
from tblog._config import Options
from tblog._delivery import lifecycle as _lifecycle
from tblog._delivery import reports as _reports
from tblog._delivery.channel import Channel
from tblog._delivery.producer import ProducerControl
from tblog._delivery.sender import (
    SHUTDOWN_TIMEOUT,
    _Default,
    busy_threads,
    get_sender,
    holds_logging_lock,
    still_busy,
)
from tblog._event.build import EventBuilder
from tblog._event.compiled import SPEEDUPS
from tblog._event.encode import jsonable
from tblog._event.gate import RATE_KEY, Gate, drain_all
from tblog._event.redact import build_redactor
from tblog._event.snapshot import (
    BASE_ATTRS,
    CTX_ATTR,
    DEFERRABLE,
    FMT_KEY,
    FMT_NONE,
    FMT_PLAIN,
    SNAPSHOT_OVERHEAD,
    ExcInfo,
    Snapshot,
    clone,
    extra_keys,
    formatter_kind,
    get_message,
    snap_formatter,
    snapshot,
    snapshot_size,
)
from tblog._event.tracekeep import TraceKeep
from tblog._queues import fast_put, take_all

__all__ = ["TinybirdLoggingHandler", "TinybirdLoggingQueueHandler", "TinybirdQueueListener"]

_current = context.current
_capture = context.capture
_OTEL = context.OTEL_MODULE  # imported: an OpenTelemetry span may be current (context.capture)
#: The compiled snapshot of a common record (``tblog._event.compiled``), or None.
_snap_compiled = SPEEDUPS.snapshot if SPEEDUPS is not None else None


def _compiled_sizes(snaps: list[Any]) -> int:
    """``sum(map(snapshot_size, snaps))``, compiled (``tblog._event.compiled``)."""
    return SPEEDUPS.snapshot_sizes(snaps, ExcInfo, snapshot_size)  # type: ignore[no-any-return]


_sizes_compiled = _compiled_sizes if SPEEDUPS is not None else None


_get_ident = threading.get_ident
_modules = sys.modules


def _handle_unlocked(self: logging.Handler, record: logging.LogRecord) -> Any:
    """``Handler.handle`` without the handler's lock (for handlers whose ``emit`` is thread-safe).

    The lock would cost every logging call an ``RLock`` round trip, and make the threads that
    log through one handler take turns.
    """
    if not self.filters:
        self.emit(record)
        return True
    rv: Any = self.filter(record)
    if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a new record
        record = rv
    if rv:
        self.emit(record)
    return rv


def _one_of(name: str, value: Any, sdk_name: str, sdk_value: Any) -> Any:
    """An argument given by tblog's name or by the Tinybird SDK's (not both, unless equal)."""
    if sdk_value is None:
        return value
    if value is not None and value != sdk_value:
        raise TypeError(f"pass {name} or {sdk_name} (the Tinybird SDK's name), not both")
    return sdk_value


class TinybirdLoggingHandler(ProducerControl, logging.Handler):
    """Ship log records to a Tinybird datasource through the Events API, in batches.

    ``TinybirdLoggingHandler(api_url, token, app_name, ds_name="tb_logs", **options)``:
    the argument order of the Tinybird Python SDK's README (its code's order, and its
    keyword names ``tinybird_api_url=``/``tinybird_admin_token=``, work too; ``ds_name=None``
    means ``tb_logs``).  ``api_url`` and
    ``token`` fall back to the environment (``TB_API_URL``/``TB_HOST``;
    ``TB_WRITE_TOKEN``/``TB_TOKEN``/``TINYBIRD_TOKEN``).  All options are
    keyword-only; see the README for each one and its default.
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        app_name: str | None = None,
        ds_name: str | None = "tb_logs",
        *,
        tinybird_api_url: str | None = None,
        tinybird_admin_token: str | None = None,
        level: int | str = logging.NOTSET,
        batch_size: int = Options.batch_size,
        flush_interval: float = Options.flush_interval,
        max_buffer_size: int = Options.max_buffer_size,
        max_buffer_bytes: int = Options.max_buffer_bytes,
        max_batch_bytes: int = Options.max_batch_bytes,
        drop_policy: str = Options.drop_policy,
        gzip: bool = Options.gzip,
        wait: bool = Options.wait,
        timeout: float = Options.timeout,
        shutdown_timeout: float = Options.shutdown_timeout,
        max_retries: int = Options.max_retries,
        max_retry_time: float = Options.max_retry_time,
        retry_base_delay: float = Options.retry_base_delay,
        retry_max_delay: float = Options.retry_max_delay,
        circuit_breaker_threshold: int = Options.circuit_breaker_threshold,
        circuit_breaker_reset: float = Options.circuit_breaker_reset,
        spool_dir: str | None = Options.spool_dir,
        max_spool_bytes: int = Options.max_spool_bytes,
        verify: bool = Options.verify,
        ca_bundle: str | None = Options.ca_bundle,
        redact: bool = Options.redact,
        redact_keys: Iterable[str] | None = None,
        redact_patterns: Iterable[str] | None = None,
        static_fields: Mapping[str, Any] | None = None,
        environment: str | None = None,
        ignore_loggers: Iterable[str] | str | None = None,
        max_event_bytes: int = Options.max_event_bytes,
        schema: str = "tblog",
        warn_stderr: bool = Options.warn_stderr,
        keep_trace_on_error: bool = Options.keep_trace_on_error,
        trace_hold_seconds: float = Options.trace_hold_seconds,
        trace_hold_max: int = Options.trace_hold_max,
        trace_hold_max_events: int = Options.trace_hold_max_events,
        trace_hold_max_bytes: int = Options.trace_hold_max_bytes,
        client_reports_interval: float = Options.client_reports_interval,
        sample: Mapping[str, Mapping[Any, float]] | None = None,
        dedup_limit: int = Options.dedup_limit,
        dedup_window: float = Options.dedup_window,
    ) -> None:
        # Every option is checked before logging.Handler.__init__ registers the handler: one
        # that refuses its options leaves no half-built handler for logging.shutdown().
        api_url = _one_of("api_url", api_url, "tinybird_api_url", tinybird_api_url)
        token = _one_of("token", token, "tinybird_admin_token", tinybird_admin_token)
        ds_name = "tb_logs" if ds_name is None else ds_name  # the SDK's None
        target = _config.resolve_target(api_url, token, app_name, ds_name, environment)
        self.app_name, self.ds_name = target.app_name, target.ds_name
        self.environment = target.environment
        self.schema = _config.check_schema(schema)
        self.options = _config.Options(
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer_size=max_buffer_size,
            max_buffer_bytes=max_buffer_bytes,
            max_batch_bytes=max_batch_bytes,
            drop_policy=drop_policy,
            gzip=gzip,
            wait=wait,
            timeout=timeout,
            shutdown_timeout=shutdown_timeout,
            max_event_bytes=max_event_bytes,
            max_retries=max_retries,
            max_retry_time=max_retry_time,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            circuit_breaker_threshold=circuit_breaker_threshold,
            circuit_breaker_reset=circuit_breaker_reset,
            spool_dir=spool_dir,
            max_spool_bytes=max_spool_bytes,
            verify=verify,
            ca_bundle=ca_bundle,
            redact=redact,
            redact_keys=_config.str_tuple("redact_keys", redact_keys),
            redact_patterns=_config.str_tuple("redact_patterns", redact_patterns),
            static_fields=static_fields if static_fields is not None else {},
            warn_stderr=warn_stderr,
            keep_trace_on_error=keep_trace_on_error,
            trace_hold_seconds=trace_hold_seconds,
            trace_hold_max=trace_hold_max,
            trace_hold_max_events=trace_hold_max_events,
            trace_hold_max_bytes=trace_hold_max_bytes,
            client_reports_interval=client_reports_interval,
            sample=_config.sample_rules(sample),
            dedup_limit=dedup_limit,
            dedup_window=dedup_window,
        )
        # which records it refuses: tblog's, its HTTP stack's, the user's (cached per name)
        self._ignore = _config.ignored_prefixes(ignore_loggers)
        self._ignore_cache: dict[str, bool] = {}
        self.ignored = 0
        self._builder = EventBuilder(
            app_name=self.app_name,
            environment=self.environment,
            schema=self.schema,
            static_fields=self.options.static_fields,
            max_event_bytes=self.options.max_event_bytes,
            redactor=build_redactor(
                self.options.redact, self.options.redact_keys, self.options.redact_patterns
            ),
        )
        super().__init__(level)
        self._sender = get_sender()
        self._channel = Channel(
            self._sender,
            api_url=target.api_url,
            token=target.token,
            datasource=self.ds_name,
            options=self.options,
            encode=self._builder.encode,
            encode_batch=self._builder.encode_batch,
            measure=snapshot_size,
            measure_many=_sizes_compiled,
            label=f"{self.app_name}:{self.ds_name}",
        )
        # where emit() puts snapshots: the channel, or a queue handler's queue
        self._put: Callable[[Any, int, int | None], bool] = self._channel.put
        # sampling and dedup (tblog._event.gate): None unless sample or dedup_limit is set
        self._gate: Gate | None = None
        self._admit: Callable[[logging.LogRecord], float] | None = None
        if self.options.sample or (self.options.dedup_limit and self.options.dedup_window):
            self._gate = Gate(
                sample=self.options.sample,
                dedup_limit=self.options.dedup_limit,
                dedup_window=self.options.dedup_window,
                ship=self._ship_summary,
            )
            self._admit = self._gate.admit
        # trace-aware keep (tblog._event.tracekeep): None unless keep_trace_on_error
        self._hold: TraceKeep | None = None
        if self.options.keep_trace_on_error:
            self._hold = TraceKeep(
                lambda snap, size, pid: self._put(snap, size, pid),  # noqa: PLW0108 - the
                # _put of the moment (a queue handler's after this)
                self._channel.count_drop,
                hold_seconds=self.options.trace_hold_seconds,
                hold_max=self.options.trace_hold_max,
                max_events=self.options.trace_hold_max_events,
                max_bytes=self.options.trace_hold_max_bytes,
            )
        _reports.watch(self._channel, app_name=self.app_name, environment=self.environment)
        self.api_url = target.api_url
        self._keep_args = self.schema == "tinybird-python-sdk"
        self._fmt_seen: logging.Formatter | None = None
        self._fmt_kind = FMT_NONE
        self._plain: logging.Formatter | None = None
        self._fast = not self._keep_args
        #: the compiled snapshot of ``emit``'s common path where ``_fast`` holds, else None
        #: (then the Python steps run; tests set None to run them)
        self._compiled: Callable[..., tuple[Any, int]] | None = (
            _snap_compiled if self._fast else None
        )
        self._closed = False

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return (
            f"<{type(self).__name__} app_name={self.app_name!r} ds_name={self.ds_name!r} "
            f"api_url={self.api_url!r} ({level})>"
        )

    # -- hot path ----------------------------------------------------------------------

    handle = _handle_unlocked

    def emit(self, record: logging.LogRecord) -> None:
        try:
            ident = _get_ident()
            if ident in busy_threads and still_busy(ident):  # the sender thread, or a record
                # logged by a snapshot
                self.ignored += 1
                return
            refused = self._ignore_cache.get(record.name)
            if refused is None:
                refused = self._refused_name(record.name)
            if refused:
                self.ignored += 1
                return
            if self._closed:
                self._channel.count_drop("closed")
                return
            admit = self._admit  # sampling and dedup (None: neither is configured)
            if admit is not None:
                rate = admit(record)
                if not rate:
                    return
            formatter = self.formatter
            if formatter is not self._fmt_seen:
                self._see_formatter(formatter)
            compiled = self._compiled  # the next branch's steps, compiled: None when not
            if compiled is not None and (made := compiled(record.__dict__, self._plain))[0]:
                snap, size = made  # (made[0] is None: not a common record, as below)
            elif self._fast and not record.exc_info and not record.exc_text:
                # ``snapshot()`` for the common record, inline: see ``_event.Snapshot``
                snap = record.__dict__.copy()
                msg, args = snap["msg"], snap["args"]
                if type(msg) is str and (
                    not args
                    or (type(args) is tuple and len(args) == 1 and type(args[0]) in DEFERRABLE)
                ):
                    # no %-formatting, or one plain argument: the sender merges it (nothing
                    # of the application's runs here, and no container is kept alive)
                    snap["args"] = arg = args[0] if args else None
                else:
                    busy_threads[ident] = True  # the re-entry guard (see busy_threads)
                    try:
                        msg = record.getMessage()
                    except Exception:  # noqa: BLE001 - bad %-args must not lose the record
                        msg = get_message(record)
                    finally:
                        busy_threads.pop(ident, None)  # (a fork's reset may have run)
                    snap["msg"] = msg
                    snap["args"] = arg = None
                ctx = snap.get(CTX_ATTR)
                if ctx is None:
                    ctx = _capture() if _OTEL in _modules else _current()
                snap["exc_text"] = ctx
                snap["exc_info"] = self._plain
                size = SNAPSHOT_OVERHEAD + len(msg) + 100 * (len(snap) - BASE_ATTRS)
                if type(arg) is str:
                    size += len(arg)
                # (== snapshot_size(snap), which the sender subtracts when it takes the snapshot)
            else:
                busy_threads[ident] = True
                try:
                    snap, size = snapshot(record, self._fmt_kind, formatter, self._keep_args)
                finally:
                    busy_threads.pop(ident, None)  # (a fork's reset may have run)
            if admit is not None and rate != 1.0:  # kept by sampling: the row says its rate
                snap[RATE_KEY] = rate  # (the snapshot is tblog's own copy of the record)
                size += 100  # one more attribute (see snapshot_size)
            if self._hold is not None and self._hold(snap, size, record.process):
                return
            self._put(snap, size, record.process)
        except Exception:  # noqa: BLE001 - never raise into the application
            self.handleError(record)

    def _ship_summary(self, record: logging.LogRecord) -> None:
        """Ship a record the gate made ("repeated K times"), as ``emit`` ships one it admits."""
        if self._closed:
            self._channel.count_drop("closed")
            return
        ident = _get_ident()
        busy_threads[ident] = True
        try:
            snap, size = snapshot(record, formatter_kind(self.formatter), self.formatter,
                                  self._keep_args)  # fmt: skip
        finally:
            busy_threads.pop(ident, None)
        self._put(snap, size, record.process)

    def _refused_name(self, name: str) -> bool:
        return _config.refused_name(name, self._ignore, self._ignore_cache)

    def _see_formatter(self, formatter: logging.Formatter | None) -> None:
        """A new formatter: decide once how its records are snapshotted."""
        kind = formatter_kind(formatter)
        self._fmt_kind = kind
        self._plain = formatter if kind == FMT_PLAIN else None
        self._fast = not self._keep_args and kind in (FMT_NONE, FMT_PLAIN)
        self._compiled = _snap_compiled if self._fast else None
        self._fmt_seen = formatter

    def accept(self, snap: Snapshot) -> None:
        """Buffer a snapshot a ``TinybirdLoggingQueueHandler`` took (the listener's thread)."""
        if self._closed:
            self._channel.count_drop("closed")
            return
        self._channel.put(snap, snapshot_size(snap), snap.get("process"))

    # -- control -----------------------------------------------------------------------

    def flush(  # type: ignore[override]
        self, timeout: float | _Default | None = SHUTDOWN_TIMEOUT
    ) -> bool:
        """Deliver what this handler buffered before the call; True when all of it arrived.

        Without an argument (``logging.shutdown``, the ``logging.Handler`` contract) it waits
        at most ``shutdown_timeout`` seconds; ``flush(None)`` waits without a limit.
        Records held by ``keep_trace_on_error`` wait for their trace's error (or their
        ``trace_hold_seconds``): they are not part of it.
        """
        return self._flush_channel(timeout)

    def close(self) -> None:
        """Deliver what is buffered (within ``shutdown_timeout``) and detach. Idempotent."""
        if self._closed:
            return
        try:
            self._close_channel()
        finally:
            super().close()

    def stats(self) -> dict[str, Any]:
        """Counters of this handler: enqueued, sent, batches, bytes, drops by reason, and more."""
        return self._producer_stats()


_TRACEBACK = "\nTraceback (most recent call last):\n"
_STACK = "\nStack (most recent call last):\n"


def unfold_exception(record: logging.LogRecord) -> logging.LogRecord:
    """``record``, or a copy whose folded-in traceback and stack are fields again.

    A record that ``QueueHandler.prepare`` made has its message, a newline and the
    formatter's exception text (``Traceback (most recent call last):`` ...) in ``msg``,
    then the stack, and no ``exc_info``.  Never mutates ``record``.
    """
    msg = record.msg
    if record.exc_info or record.exc_text or record.args or type(msg) is not str:
        return record
    cut = msg.find(_TRACEBACK)
    stack_at = msg.find(_STACK)
    if cut < 0 and (stack_at < 0 or record.stack_info):
        return record
    attrs = record.__dict__.copy()
    if stack_at >= 0 and not record.stack_info:
        attrs["stack_info"] = msg[stack_at + 1 :]
        msg = msg[:stack_at]
    if cut >= 0:
        attrs["exc_text"] = msg[cut + 1 :]
        msg = msg[:cut]
    attrs["msg"] = attrs["message"] = msg
    return clone(record, attrs)


def _crosses_processes(q: Any) -> bool:
    """Whether what goes on ``q`` may be pickled for another process (any queue but the
    ``queue`` module's in-process ones): then only JSON values go."""
    return not isinstance(q, (_queue.Queue, _queue.SimpleQueue))


def _carry_context(q: Any) -> None:
    """Make ``q.put_nowait`` attach the caller's trace context to the records put on ``q``.

    A standard ``QueueHandler`` puts its copy of the record (``prepare``) with
    ``put_nowait``, on the caller's thread: there the context is read and attached to that
    copy (never to the caller's record), and the listener's handlers read it instead of
    their own thread's.  On a queue between processes the bound fields go as JSON values.
    A queue that refuses the attribute keeps working, without the context.
    """
    put_nowait = getattr(q, "put_nowait", None)
    if put_nowait is None or getattr(put_nowait, "_tblog_carries", False):
        return
    portable = _crosses_processes(q)
    record_type, capture = logging.LogRecord, context.capture

    def put_with_context(item: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(item, record_type) and CTX_ATTR not in item.__dict__:
            try:
                trace_id, span_id, bound = capture()
                if portable:
                    bound = jsonable(dict(bound))
                item.__dict__[CTX_ATTR] = (trace_id, span_id, bound)
            except Exception:  # noqa: BLE001, S110 - the record goes on without its context
                pass
        return put_nowait(item, *args, **kwargs)

    put_with_context._tblog_carries = True  # type: ignore[attr-defined]
    try:
        q.put_nowait = put_with_context
    except Exception:  # noqa: BLE001 - a queue without an instance dict: no context
        _diag.warn_once(
            "queue-context",
            "tblog: cannot attach the trace context to records on a %s; their trace ids are "
            "the listener thread's",
            type(q).__name__,
        )


class TinybirdQueueListener(logging.handlers.QueueListener):
    """A ``QueueListener`` that starts itself and drains its queue at exit.

    For ``dictConfig`` on Python 3.12+ (``listener: tblog.TinybirdQueueListener``),
    which creates the listener but never starts it.  ``start()`` and ``stop()``
    are idempotent, and a forked child never stops its parent's listener.  Records
    that a standard ``QueueHandler`` puts on its queue carry the trace context of the
    logging call (``_carry_context``).
    """

    _carries_context = True

    def __init__(
        self,
        queue: Any,
        *handlers: logging.Handler,
        respect_handler_level: bool = False,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(queue, *handlers, respect_handler_level=respect_handler_level)
        if self._carries_context:
            _carry_context(queue)
        self._owner_pid = os.getpid()
        self._state_lock = threading.Lock()
        self.stop_timeout = stop_timeout
        self._thread: threading.Thread | None = None
        _listeners.add(self)
        self.start()

    def start(self) -> None:
        with self._state_lock:
            if self._thread is not None and os.getpid() == self._owner_pid:
                return
            self._owner_pid = os.getpid()
            thread = threading.Thread(target=self._monitor, name="tblog-queue-listener")
            thread.daemon = True
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        """Handle every record already queued, then stop the thread (bounded by stop_timeout)."""
        self._stop(self.stop_timeout)

    def _stop(self, timeout: float) -> None:
        with self._state_lock:
            thread, self._thread = self._thread, None
            if thread is None or os.getpid() != self._owner_pid:
                return  # never started, already stopped, or the parent's listener after fork
        with contextlib.suppress(Exception):  # a closed queue: the thread ends on its own
            self.enqueue_sentinel()
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _monitor(self) -> None:
        """Handle what arrives until the sentinel; on a plain ``queue.Queue``, all that is
        queued at each wake-up at once (``take_all``), not one ``get()`` per record."""
        bulk = take_all(self.queue)
        if bulk is None or type(self).dequeue is not logging.handlers.QueueListener.dequeue:
            super()._monitor()  # type: ignore[misc]
            return
        take, done = bulk
        sentinel, handle = self._sentinel, self.handle  # type: ignore[attr-defined]
        while True:
            items = take()
            stop = not items  # a queue shut down (3.13+)
            try:
                for item in items:
                    if item is sentinel:
                        stop = True  # what was put after it is handled too, not left behind
                        continue
                    try:
                        handle(item)
                    except Exception as exc:  # noqa: BLE001 - one bad item: the rest go on
                        _diag.diag(
                            logging.ERROR, "listener-item",
                            "tblog: the queue listener could not handle a %s (%s)",
                            type(item).__name__, type(exc).__name__,
                        )  # fmt: skip
            finally:
                done(len(items))
            if stop:
                return

    def prepare(self, record: Any) -> Any:
        """A standard ``QueueHandler``'s record with its exception taken out of the message.

        ``QueueHandler.prepare`` folds the traceback (and a stack) into ``msg`` and drops
        ``exc_info``; here, on the listener's thread, the text after the message becomes
        ``exc_text`` (and ``stack_info``) again on a copy, so the event ships the message
        and a structured ``exception``.
        """
        if isinstance(record, logging.LogRecord):
            return unfold_exception(record)
        return record

    def handle(self, record: Any) -> None:
        if type(record) is dict:  # from a TinybirdLoggingQueueHandler: a snapshot or a marker
            self._handle_item(record)
            return
        try:
            super().handle(record)
        except Exception:  # noqa: BLE001 - the listener thread must survive a bad record
            for handler in self.handlers[:1]:
                handler.handleError(record)

    def _handle_item(self, item: dict[str, Any]) -> None:
        token = item.get(FLUSH_KEY)
        if token is not None:
            done = _flush_marks.pop(token, None)
            if done is not None:
                done.set()
            return
        for handler in self.handlers:
            if isinstance(handler, TinybirdLoggingHandler):
                handler.accept(item)
                return


class _SnapshotListener(TinybirdQueueListener):
    """The listener of a ``TinybirdLoggingQueueHandler``: its snapshots carry their context."""

    _carries_context = False

    def __init__(self, queue: Any, handler: TinybirdLoggingHandler) -> None:
        self._accept = handler.accept
        super().__init__(queue, handler)

    def handle(self, record: Any) -> None:
        if type(record) is dict and FLUSH_KEY not in record:  # a snapshot: the common case
            self._accept(record)
        else:
            super().handle(record)


_listeners: weakref.WeakSet[TinybirdQueueListener] = weakref.WeakSet()
#: Marks a flush() of a TinybirdLoggingQueueHandler puts on its queue: token -> reached.
FLUSH_KEY = "_tblog_flush"
_flush_marks: dict[int, threading.Event] = {}
_flush_tokens = itertools.count(1)


_queue_handlers: weakref.WeakSet[TinybirdLoggingQueueHandler] = weakref.WeakSet()


def _stop_listeners(seconds: float) -> None:
    """The last exit pass (``tblog._delivery.lifecycle``): queued records reach the sender's buffers
    before its final delivery, within the exit budget."""
    deadline = time.monotonic() + seconds
    for listener in list(_listeners):
        timeout = listener.stop_timeout
        if any(isinstance(h, TinybirdLoggingHandler) for h in listener.handlers):
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            listener._stop(timeout)


def _drain_process_queues(seconds: float) -> None:
    """The first exit pass (``tblog._delivery.lifecycle``): listeners on ``multiprocessing`` queues
    handle what is queued now, before ``multiprocessing``'s exit function closes the queues
    under them.  A queue handler of this process then buffers its records directly, so what
    is logged later (by non-daemon threads, by atexit hooks) is not left on a queue that
    nobody reads any more."""
    deadline = time.monotonic() + seconds
    for handler in list(_queue_handlers):
        if handler._cross_process and os.getpid() == handler._owner_pid and not handler._closed:
            handler.handler._put = handler.handler._channel.put  # before the sentinel goes
    for listener in list(_listeners):
        if _crosses_processes(listener.queue):
            with contextlib.suppress(Exception):
                listener._stop(min(listener.stop_timeout, max(0.0, deadline - time.monotonic())))


_lifecycle.on_first_pass(_drain_process_queues)
_lifecycle.on_first_pass(drain_all)  # dedup summaries, before the exit delivery
_lifecycle.on_last_pass(_stop_listeners)


def _portable(snap: Snapshot) -> Snapshot:
    """A snapshot that crosses a process boundary: JSON values only, formatter output as text.

    Pickle may fail later, on multiprocessing's feeder thread, where the record would be lost
    without a trace: only JSON-able values go, and a plain Formatter sends its text.
    """
    for key in extra_keys(snap):
        snap[key] = jsonable(snap[key])
    trace_id, span_id, bound = snap["exc_text"]
    snap["exc_text"] = (trace_id, span_id, jsonable(dict(bound)))
    if isinstance(snap_formatter(snap), logging.Formatter):
        snap[FMT_KEY] = EventBuilder.formatted_message(snap)
        if isinstance(snap.get("exc_info"), logging.Formatter):
            snap["exc_info"] = None
    return snap


class TinybirdLoggingQueueHandler(logging.handlers.QueueHandler):
    """Drop-in for the Tinybird SDK's ``TinybirdLoggingQueueHandler``.

    ``TinybirdLoggingQueueHandler(queue, api_url, token, app_name, ds_name="tb_logs",
    **options)``: records go on ``queue`` (a ``queue.Queue`` or a
    ``multiprocessing.Queue``), and a listener started here ships them with an
    internal ``TinybirdLoggingHandler`` built from the same arguments.  Child
    processes forked after construction log through the inherited handler; their
    records reach the parent's listener with their trace context.
    """

    def __init__(
        self,
        queue: Any,
        api_url: str | None = None,
        token: str | None = None,
        app_name: str | None = None,
        ds_name: str | None = "tb_logs",
        **options: Any,
    ) -> None:
        level = options.pop("level", logging.NOTSET)
        # the inner handler checks the options first: a refusal registers neither handler
        self.handler = TinybirdLoggingHandler(api_url, token, app_name, ds_name, **options)
        logging.handlers.QueueHandler.__init__(self, queue)
        self.setLevel(level)
        self.handler._put = self._enqueue_snapshot  # its snapshots go on the queue
        self._cross_process = _crosses_processes(queue)
        self._put_nowait = fast_put(queue)
        self._owner_pid = os.getpid()
        self._closed = False
        self.listener: TinybirdQueueListener = _SnapshotListener(queue, self.handler)
        _queue_handlers.add(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapping {self.handler!r}>"

    handle = _handle_unlocked  # the queue and the internal handler are thread-safe

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging API
        """The formatter shapes ``formatted_message`` in the listener's handler.

        With ``schema="tinybird-python-sdk"`` it shapes ``message`` instead, as the SDK's
        ``QueueHandler.prepare`` does, and the inner handler has none (as the SDK's).
        """
        super().setFormatter(fmt)
        if not self.handler._keep_args:
            self.handler.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        """Snapshot the record on the caller's thread and put the snapshot on the queue.

        The queue carries tblog's snapshots (plain dicts, picklable for a
        ``multiprocessing.Queue``), which this handler's own listener hands to its
        internal handler: the record is copied once, not prepared and copied again.
        The internal handler takes the snapshot (the same code as when it is used
        directly) and puts it here, on the queue (``_enqueue_snapshot``).  With
        ``schema="tinybird-python-sdk"`` that record is ``QueueHandler.prepare``'s, as
        in the SDK: the formatted text as message, no args, no exception.
        """
        if self.handler._keep_args:
            prepared = self._sdk_prepared(record)
            if prepared is None:
                return
            record = prepared
        self.handler.emit(record)

    def _sdk_prepared(self, record: logging.LogRecord) -> logging.LogRecord | None:
        ident = threading.get_ident()
        if ident in busy_threads and still_busy(ident):
            return record  # logged by our own formatting: the inner handler ignores it
        busy_threads[ident] = True  # the re-entry guard (see busy_threads)
        try:
            prepared: logging.LogRecord = self.prepare(record)
            return prepared
        except Exception:  # noqa: BLE001 - never raise into the application
            self.handleError(record)
            return None
        finally:
            busy_threads.pop(ident, None)

    def _enqueue_snapshot(self, snap: Any, size: int, pid_hint: int | None = None) -> bool:
        if self._cross_process:
            snap = _portable(snap)
        try:
            self._put_nowait(snap)
        except _queue.Full:
            self.handler._channel.count_drop("queue_full")
            return False
        return True

    def flush(  # type: ignore[override]
        self, timeout: float | _Default | None = SHUTDOWN_TIMEOUT
    ) -> bool:
        """Deliver what was logged through this handler before the call, queue included.

        A mark goes on the queue after this process's records; once the listener reaches
        it, the internal handler delivers.  True when all of it arrived within ``timeout``
        (no argument: ``shutdown_timeout``; None: no limit).
        """
        if timeout is SHUTDOWN_TIMEOUT:
            timeout = self.handler.options.shutdown_timeout
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        self.handler._drain()  # dedup summaries go on the queue before the mark
        if (
            os.getpid() == self._owner_pid
            and not self._closed
            and self.listener._thread is not None
            and not holds_logging_lock()
        ):
            token = next(_flush_tokens)
            reached = _flush_marks[token] = threading.Event()
            try:
                self.queue.put_nowait({FLUSH_KEY: token})
            except Exception:  # noqa: BLE001 - a full or closed queue: flush what we have
                _flush_marks.pop(token, None)
            else:
                if not reached.wait(None if deadline is None else deadline - time.monotonic()):
                    _flush_marks.pop(token, None)
                    self.handler._channel.timed_out_at = time.monotonic()  # see close_timeout
                    return False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.handler.flush(remaining)

    def stats(self) -> dict[str, Any]:
        return self.handler.stats()

    def close(self) -> None:
        """Stop the listener (handling what is queued), then close the inner handler."""
        if self._closed:
            return
        self._closed = True
        try:
            if os.getpid() == self._owner_pid:
                self.handler._drain()  # dedup summaries go on the queue the listener empties
                self.listener.stop()
                self.handler.close()
        finally:
            super().close()
