"""OpenTelemetry: log lines inside a span carry the span's trace and span ids.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/otel_example.py
(needs ``pip install opentelemetry-sdk``)
"""

from __future__ import annotations

import logging
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import tblog

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/otel_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)


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
