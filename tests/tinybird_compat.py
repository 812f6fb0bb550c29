"""The compatibility table of ``tblog local`` with Tinybird's own clients: the one source.

``ROWS`` lists, per client and action, whether it works against ``tblog local``.  A "works"
row names the pytest node id of the test that runs the real client and proves it (the test
suite checks every named test exists, and the test itself runs in the suite, so a client
action that breaks fails CI); a "no" row gives the documented reason instead.

``docs/tinybird-compat.md`` is rendered from ``ROWS`` (tests/test_tinybird_compat.py checks
it is up to date).  Regenerate it with::

    python -m tests.tinybird_compat > docs/tinybird-compat.md

Helpers add rows with small edits: keep each client's rows together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

Status = Literal["works", "no"]


@dataclass(frozen=True)
class Row:
    """One client action: ``proof`` is a pytest node id ("works") or the reason ("no")."""

    client: str
    action: str
    status: Status
    proof: str


CLASSIC = "tb (tinybird-cli 6.5.5)"
FORWARD = "tb (Forward CLI, tinybird 5.0.3)"
SDK = "tinybird-sdk 0.4.0"
PYSDK = "tinybird-python-sdk 0.3.7"

ROWS: list[Row] = [
    # -- classic tb (tinybird-cli) --
    Row(CLASSIC, "`tb auth`", "works", "tests/test_tb_classic.py::test_tb_auth"),
    Row(CLASSIC, "`tb sql`", "works", "tests/test_tb_classic.py::test_tb_sql"),
    Row(CLASSIC, "`tb datasource ls`", "works", "tests/test_tb_classic.py::test_tb_datasource_ls"),
    Row(
        CLASSIC,
        "`tb push` of a `.datasource`",
        "works",
        "tests/test_tb_classic.py::test_tb_push_datasource",
    ),
    Row(
        CLASSIC,
        "`tb datasource append` (CSV and NDJSON file)",
        "works",
        "tests/test_tb_classic.py::test_tb_datasource_append",
    ),
    Row(
        CLASSIC,
        "`tb datasource truncate`",
        "works",
        "tests/test_tb_classic.py::test_tb_datasource_truncate",
    ),
    Row(CLASSIC, "`tb datasource rm`", "works", "tests/test_tb_classic.py::test_tb_datasource_rm"),
    Row(CLASSIC, "`tb token ls`", "works", "tests/test_tb_classic.py::test_tb_token_ls"),
    Row(
        CLASSIC,
        "`tb push` of a new `.pipe` (`TYPE endpoint`), `tb pipe data`, `tb pipe rm`",
        "works",
        "tests/test_tb_pipes.py::test_tb_push_a_new_pipe_then_read_and_remove_it",
    ),
    Row(
        CLASSIC,
        "`tb push` of a `.pipe` without `TYPE endpoint` (its last node is published)",
        "works",
        "tests/test_tb_pipes.py::test_tb_push_a_pipe_without_type_endpoint_publishes_its_last_node",
    ),
    Row(
        CLASSIC,
        "`tb push --force --no-check` of tblog's shipped pipes over the served ones",
        "works",
        "tests/test_tb_pipes.py::test_tb_push_the_shipped_pipes_over_the_served_ones",
    ),
    Row(
        CLASSIC,
        "`tb push --force` of an existing pipe *with* regression checks",
        "no",
        "the checks replay recent requests read from Tinybird's `tinybird.pipe_stats_rt` "
        "service datasource, which tblog local does not keep; add `--no-check`",
    ),
    Row(
        CLASSIC,
        "`tb pipe ls`",
        "works",
        "tests/test_tb_pipes.py::test_tb_pipe_ls_lists_the_shipped_pipes",
    ),
    # -- Forward CLI (tinybird 5.x, `tb --local`) --
    Row(
        FORWARD,
        "`tb --local` finds the server and its token (`GET /tokens`)",
        "works",
        "tests/test_tb_forward.py::test_local_tokens_are_the_admin_token_for_loopback_clients",
    ),
    Row(FORWARD, "`tb --local sql`", "works", "tests/test_tb_forward.py::test_tb_local_sql"),
    Row(
        FORWARD,
        "`tb --local datasource ls`",
        "works",
        "tests/test_tb_forward.py::test_tb_local_datasource_ls",
    ),
    Row(
        FORWARD,
        "`tb --local datasource truncate`",
        "works",
        "tests/test_tb_forward.py::test_tb_local_datasource_truncate",
    ),
    Row(
        FORWARD,
        "`tb --local token ls`",
        "works",
        "tests/test_tb_forward.py::test_tb_local_token_ls",
    ),
    Row(
        FORWARD, "`tb --local pipe ls`", "works", "tests/test_tb_forward.py::test_tb_local_pipe_ls"
    ),
    Row(
        FORWARD,
        "`tb --local datasource append` (a file, `--events`)",
        "works",
        "tests/test_local_jobs.py::test_tb_local_datasource_append_file",
    ),
    Row(
        FORWARD,
        "`tb --local job ls`, `tb --local job details`",
        "works",
        "tests/test_local_jobs.py::test_tb_local_job_ls_and_details",
    ),
    Row(
        FORWARD,
        "`tb --local build`, `tb --local deploy`",
        "no",
        "they send the whole project to `POST /v1/build` / `/v1/deploy`, which Tinybird "
        "compiles server-side into a deployment (staging, promotion, data migrations); "
        "tblog local has no deployments. Push datafiles with classic `tb push` or the "
        "Data Sources and Pipes APIs",
    ),
    Row(
        FORWARD,
        "`tb local start` / `stop` / `restart`",
        "no",
        "they manage Tinybird Local's Docker container; run `tblog local` instead "
        "(it listens on localhost:7181, where `tb --local` looks; set `TB_LOCAL_HOST` and "
        "`TB_LOCAL_PORT` for another address)",
    ),
    # -- tinybird-sdk --
    Row(SDK, "`query` (a pipe endpoint)", "works", "tests/test_tb_sdk.py::test_sdk_query"),
    Row(
        SDK,
        "`append_datasource` (CSV and NDJSON file)",
        "works",
        "tests/test_tb_sdk.py::test_sdk_append_datasource",
    ),
    Row(
        SDK, "`truncate_datasource`", "works", "tests/test_tb_sdk.py::test_sdk_truncate_datasource"
    ),
    Row(
        SDK,
        "`delete_datasource` (rows by condition)",
        "works",
        "tests/test_tb_sdk.py::test_sdk_delete_datasource",
    ),
    Row(
        SDK,
        "`create_jwt` (`create_token` with a JSON body)",
        "works",
        "tests/test_tb_sdk.py::test_sdk_create_token_with_a_json_body",
    ),
    # -- tinybird-python-sdk --
    Row(
        PYSDK,
        "`Datasource(...)` buffered ingestion (Events API)",
        "works",
        "tests/test_tinybird_python_sdk_client.py::test_datasource_ingests_rows",
    ),
    Row(
        PYSDK,
        "`API.get('sql', params={'q': ...})`",
        "works",
        "tests/test_tinybird_python_sdk_client.py::test_api_queries_with_get",
    ),
    Row(
        PYSDK,
        "`API.post('sql', data=<SQL text>)`",
        "works",
        "tests/test_tinybird_python_sdk_client.py::test_api_queries_with_a_plain_post_body",
    ),
    Row(
        PYSDK,
        "`API.get('datasources')`",
        "works",
        "tests/test_tinybird_python_sdk_client.py::test_api_lists_datasources",
    ),
]

HEADER = (
    "# Tinybird clients against `tblog local`\n"
    "\n"
    "Generated from `tests/tinybird_compat.py` "
    "(`python -m tests.tinybird_compat > docs/tinybird-compat.md`); "
    'each "works" row is proved by the named test, which runs the real client '
    "against a `tblog local` on loopback.\n"
    "\n"
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row] | None = None) -> str:
    """The markdown table of ``rows`` (default: ``ROWS``)."""
    lines = [
        "| Client | Action | Works | Proof or reason |",
        "| --- | --- | --- | --- |",
    ]
    for row in ROWS if rows is None else rows:
        works = "yes" if row.status == "works" else "no"
        proof = f"`{_cell(row.proof)}`" if row.status == "works" else _cell(row.proof)
        lines.append(f"| {_cell(row.client)} | {_cell(row.action)} | {works} | {proof} |")
    return HEADER + "\n".join(lines) + "\n"


def table() -> str:
    """The table alone, as the README shows it (between its compat-table comments)."""
    return render()[len(HEADER) :]


if __name__ == "__main__":
    sys.stdout.write(table() if sys.argv[1:] == ["--readme"] else render())
