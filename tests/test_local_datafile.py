"""The ``.datasource`` parser: its rules, its DDL on real chDB, and agreement with Tinybird's.

The agreement test runs Tinybird's own parser (``tinybird-cli``) from a separate venv,
``.venv-tinybird``, that ``make test`` creates: ``tinybird-cli`` pins ``urllib3<2``,
``click<8.2`` and others that must not leak into the project's test venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tblog.local.datafile import (
    DatafileError,
    Datasource,
    load_datasource,
    load_directory,
    parse_datasource,
)
from tblog.local.server import DEFAULT_DATASOURCES
from tests.localserver import event, ndjson, post, scalar, serve

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "sample.datasource"
SHIPPED = sorted(DEFAULT_DATASOURCES.glob("*.datasource"))


def _tinybird_python() -> Path | None:
    configured = os.environ.get("TBLOG_TINYBIRD_PYTHON")
    if configured:
        return Path(configured)
    candidate = ROOT / ".venv-tinybird" / "bin" / "python"
    return candidate if candidate.exists() else None


def _ours(ds: Datasource) -> dict[str, Any]:
    return {
        "description": " ".join(ds.description.split()),
        "columns": [
            {
                "name": c.name,
                "type": c.inner_type,
                "nullable": c.nullable,
                "default_value": f"{c.default_kind} {c.default_expr}" if c.default_kind else None,
                "jsonpath": c.jsonpath,
                "codec": c.codec,
            }
            for c in ds.columns
        ],
        "engine": ds.engine,
        "engine_args": ds.engine_args,
    }


def test_parser_agrees_with_tinybird_cli_on_every_shipped_file() -> None:
    python = _tinybird_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the parser-agreement test: make .venv-tinybird/.ok first")
        pytest.skip("no .venv-tinybird (make test creates it)")
    files = [*SHIPPED, SAMPLE]
    out = subprocess.run(
        [str(python), str(ROOT / "tests" / "tinybird_parse.py"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    theirs = json.loads(out)
    assert set(theirs) == {f.stem for f in files}
    for path in files:
        mine = _ours(load_datasource(path))
        tb = theirs[path.stem]
        tb["description"] = " ".join(tb["description"].split())
        del tb["indexes"]
        assert mine == tb, path.name


def test_tb_logs_parses_to_the_event_schema() -> None:
    ds = load_datasource(DEFAULT_DATASOURCES / "tb_logs.datasource")
    assert ds.name == "tb_logs"
    assert ds.column("timestamp") is not None
    assert ds.column("event_id").type == "UUID"  # type: ignore[union-attr]
    extra = ds.column("extra")
    assert extra is not None
    assert (extra.type, extra.jsonpath, extra.default_expr) == ("String", "$.extra", "'{}'")
    stack = ds.column("exception_stacktrace")
    assert stack is not None
    assert stack.path == ("exception", "stacktrace")
    assert ds.engine_args["sorting_key"] == "app_name, level, timestamp"
    assert "ORDER BY (app_name, level, timestamp)" in ds.create_sql()


def test_sample_features() -> None:
    ds = load_datasource(SAMPLE)
    assert ds.tokens == (("orders_append", "APPEND"),)
    amount = ds.column("amount")
    assert amount is not None
    assert amount.nullable
    assert amount.path == ("order", "amount")
    items = ds.column("items")
    assert items is not None
    assert items.path == ("items",)
    day = ds.column("day")
    assert day is not None
    assert not day.insertable
    assert ds.engine_sql().startswith("ENGINE = ReplacingMergeTree(version)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENGINE MergeTree\n", "no SCHEMA"),
        ("SCHEMA >\n    `a` String,\n    `a` Int32\n", "duplicate"),
        ("SCHEMA >\n    `a` String `json:a.b`\n", r"must start with \$"),
        ("SCHEMA >\n    `a`\n", "no type"),
        ("ENGINE MergeTree\nFOO bar\n", "unknown command"),
    ],
)
def test_bad_datafiles_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(DatafileError, match=message):
        parse_datasource(text, "bad")


def test_datasources_and_quarantine_tables_are_created_and_persist(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    for path in [*SHIPPED, SAMPLE]:
        (folder / path.name).write_text(path.read_text())
    data = tmp_path / "data"
    gen = serve(data, datasources=folder)
    server = next(gen)
    try:
        assert {d.name for d in load_directory(folder)} <= set(server.store.datasources)
        order = {
            "order": {"id": "o1", "amount": 9.5},
            "tenant_id": "acme",
            "items": ["a"],
            "status": "paid",
            "updated_at": "2026-11-22T10:00:00.123Z",
            "version": 2,
        }
        r = post(server, ndjson(order, {**order, "status": "lost"}), ds="sample")
        assert r.json() == {"successful_rows": 1, "quarantined_rows": 1}
        # `sample` is also a keyword (SAMPLE): the SQL API's parser wants such a name quoted
        assert scalar(server, "SELECT toString(day) FROM `sample`") == "2026-11-22"
        assert post(server, ndjson(event(app_name="persist"))).status_code == 200
    finally:
        next(gen, None)
    gen = serve(data, datasources=folder)  # the same data dir, a new server
    server = next(gen)
    try:
        assert int(scalar(server, "SELECT count() FROM tb_logs WHERE app_name = 'persist'")) == 1
        assert int(scalar(server, "SELECT count() FROM sample_quarantine")) == 1
    finally:
        next(gen, None)


def test_tinybird_parse_helper_is_not_imported_by_the_suite() -> None:
    assert "tests.tinybird_parse" not in sys.modules


def test_a_bad_datafile_is_skipped_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "good.datasource").write_text("SCHEMA >\n    `a` String `json:$.a`\n")
    (folder / "broken.datasource").write_text("SCHEMA >\n    `a` NoSuchType `json:$.a`\n")
    gen = serve(tmp_path / "data", datasources=folder)
    server = next(gen)
    try:
        assert set(server.store.datasources) == {"good"}
        assert [name for name, _ in server.load_errors] == ["broken.datasource"]
        assert "NoSuchType" in server.load_errors[0][1]
    finally:
        next(gen, None)
