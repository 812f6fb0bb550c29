"""OpenTelemetry: log lines inside a span carry the span's trace and span ids.

Run:  TB_API_URL=http://127.0.0.1:7181 TB_TOKEN=<append token> python examples/otel_example.py
(needs ``pip install opentelemetry-sdk``)
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import tblog

API_URL = os.environ.get("TB_API_URL", "http://127.0.0.1:7181")
TOKEN = os.environ.get("TB_TOKEN", "p.local-example-token")


def main() -> int:
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("otel-example")
    handler = tblog.TinybirdLoggingHandler(API_URL, TOKEN, "otel-example")
    log = logging.getLogger("otel_example")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    with tracer.start_as_current_span("handle-order") as span:
        ctx = span.get_span_context()
        print(f"span trace_id={ctx.trace_id:032x} span_id={ctx.span_id:016x}")
        log.info("inside the span: this row carries the span's ids")
    delivered = handler.flush(10)
    print("delivered:", delivered, handler.stats())
    handler.close()
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
