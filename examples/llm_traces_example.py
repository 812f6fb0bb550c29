"""Multi-tenant LLM traces: each tenant's rows go to ``traces`` under that tenant's own token.

Run:  TB_HOST=http://127.0.0.1:7181 TB_TOKEN=<token> python examples/llm_traces_example.py
Set ``TB_TENANT_TOKENS='{"acme": "p...", "globex": "p..."}'`` to route several tenants.
"""

from __future__ import annotations

import json
import os
import sys

from tblog.llm import TraceRecorder, UnknownTenantError

# The two variables `tblog local` prints (the README's quick start exports them), read
# as tblog reads them: the host from TB_API_URL or TB_HOST (else https://api.tinybird.co),
# the token from TB_WRITE_TOKEN, TB_TOKEN or TINYBIRD_TOKEN. No token: one line, exit 2.
ENV_TOKENS = ("TB_WRITE_TOKEN", "TB_TOKEN", "TINYBIRD_TOKEN")
NO_TOKEN = "no Tinybird token: start `tblog local` and export the TB_HOST and TB_TOKEN it prints"
API_URL = os.environ.get("TB_API_URL") or os.environ.get("TB_HOST") or None
TOKEN = next((os.environ[k] for k in ENV_TOKENS if os.environ.get(k)), "")
if not TOKEN:
    print("examples/llm_traces_example.py: " + NO_TOKEN, file=sys.stderr)
    raise SystemExit(2)
TENANTS = json.loads(os.environ.get("TB_TENANT_TOKENS") or json.dumps({"acme": TOKEN}))


def fake_llm_stream(question: str) -> list[str]:
    return ["You asked: ", question[:20], ". Here is an answer."]


def main() -> int:
    recorder = TraceRecorder(TENANTS, api_url=API_URL, project_id="support-bot")
    for tenant in recorder.tenants:
        with recorder.span("Answer the ticket", tenant_id=tenant, model="gpt-4o-mini") as root:
            with recorder.span("Retrieve documents", context="kb") as retrieval:
                retrieval.set_response("3 documents", status=200)
            text = "".join(root.stream(fake_llm_stream("Where is my order?")))
            root.set_response(text, tokens_prompt=12, tokens_completion=9, finish_reason="stop")
        print(f"{tenant}: trace {root.trace_id}")
    try:
        recorder.span("no token for this tenant", tenant_id="unknown-tenant")
    except UnknownTenantError as exc:
        print("refused:", exc)
    delivered = recorder.close(10)
    stats = recorder.stats()
    print("delivered:", delivered, {k: v for k, v in stats.items() if k != "tenants"})
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
