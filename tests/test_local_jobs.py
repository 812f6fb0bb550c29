"""Tinybird's Jobs API on ``tblog local`` (tblog.local.jobs_api): the jobs the Data Sources
API hands out are served at ``GET /v0/jobs/ID`` and listed at ``GET /v0/jobs``, so the
Forward CLI's ``tb --local datasource append`` (which polls the import job) works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tblog.local import jobs_api
from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, scalar, serve
from tests.test_tb_forward import _tb


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("jobs"))


def _get(server: LocalServer, path: str, token: str | None = None) -> requests.Response:
    return requests.get(
        f"{server.url}{path}",
        headers={"Authorization": f"Bearer {token or server.admin_token}"},
        timeout=10,
    )


def _append(server: LocalServer, body: bytes, token: str | None = None,
            ds: str = "tb_logs", mode: str = "append") -> dict[str, Any]:  # fmt: skip
    answer = requests.post(
        f"{server.url}/v1/datasources/{ds}/{mode}?format=ndjson",
        data=body,
        headers={
            "Authorization": f"Bearer {token or server.admin_token}",
            "Content-Type": "application/x-ndjson",
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()
    return out


# -- the Forward CLI --


@pytest.mark.slow
def test_tb_local_datasource_append_file(server: LocalServer, tmp_path: Path) -> None:
    before = int(scalar(server, "SELECT count() FROM tb_logs WHERE message = 'fwd file'"))
    rows = tmp_path / "rows.ndjson"
    rows.write_bytes(ndjson(event(message="fwd file"), event(message="fwd file")))
    done = _tb(server, tmp_path, "datasource", "append", "tb_logs", str(rows))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Rows appended" in done.stdout, done.stdout
    after = int(scalar(server, "SELECT count() FROM tb_logs WHERE message = 'fwd file'"))
    assert after == before + 2


@pytest.mark.slow
def test_tb_local_datasource_append_events(server: LocalServer, tmp_path: Path) -> None:
    line = json.dumps(event(message="fwd events"))
    done = _tb(server, tmp_path, "datasource", "append", "tb_logs", "--events", line)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 row appended" in done.stdout, done.stdout
    assert int(scalar(server, "SELECT count() FROM tb_logs WHERE message = 'fwd events'")) == 1


@pytest.mark.slow
def test_tb_local_job_ls_and_details(server: LocalServer, tmp_path: Path) -> None:
    job = _append(server, ndjson(event(message="for job ls")))["id"]
    listed = _tb(server, tmp_path, "job", "ls")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert job in listed.stdout
    details = _tb(server, tmp_path, "job", "details", job)
    assert details.returncode == 0, details.stdout + details.stderr
    assert job in details.stdout and "done" in details.stdout


# -- the API --


def test_import_job_details(server: LocalServer) -> None:
    appended = _append(server, ndjson(event(message="job a"), event(message="job b"), {"x": 1}))
    job_id = appended["job_id"]
    assert appended["id"] == job_id
    answer = _get(server, f"/v0/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["id"] == job["job_id"] == job["import_id"] == job_id
    assert job["kind"] == "import" and job["status"] == "done" and job["mode"] == "append"
    assert job["job_url"] == f"{server.url}/v0/jobs/{job_id}"
    assert job["datasource"] == {"id": appended["datasource"]["id"], "name": "tb_logs"}
    assert job["created_at"] <= job["updated_at"]
    assert len(job["created_at"]) == len("2026-12-03 16:00:00.000000")
    assert job["quarantine_rows"] == 1 and job["invalid_lines"] == 0
    assert job["statistics"]["row_count"] == scalar(server, "SELECT count() FROM tb_logs")
    [block] = job["blocks"]
    assert block["process_return"][0]["lines"] == 2
    assert block["process_return"][0]["quarantine"] == 1
    assert job["is_cancellable"] is False


def test_replace_and_delete_jobs(server: LocalServer) -> None:
    token = server.admin_token
    create = requests.post(
        f"{server.url}/v0/datasources",
        params={"name": "jobs_t", "schema": "`a` String `json:$.a`"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert create.status_code == 200, create.text
    replaced = _append(server, b'{"a":"x"}\n{"a":"y"}\n', ds="jobs_t", mode="replace")
    job = _get(server, f"/v0/jobs/{replaced['id']}").json()
    assert job["kind"] == "import" and job["mode"] == "replace"
    assert job["statistics"]["row_count"] == 2
    deleted = requests.post(
        f"{server.url}/v0/datasources/jobs_t/delete",
        data={"delete_condition": "a = 'x'"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    job = _get(server, f"/v0/jobs/{deleted['job_id']}").json()
    assert job["kind"] == "delete_data" and job["status"] == "done"
    assert job["rows_affected"] == 1 and job["delete_condition"] == "a = 'x'"
    assert job["datasource"]["name"] == "jobs_t"


def test_list_jobs_newest_first_and_filtered(server: LocalServer) -> None:
    first = _append(server, ndjson(event(message="list 1")))["id"]
    second = _append(server, ndjson(event(message="list 2")))["id"]
    answer = _get(server, "/v0/jobs")
    assert answer.status_code == 200, answer.text
    jobs = answer.json()["jobs"]
    ids = [j["id"] for j in jobs]
    assert ids.index(second) < ids.index(first)
    top = jobs[ids.index(second)]
    assert {"id", "kind", "status", "created_at", "updated_at", "job_url",
            "datasource"} <= set(top)  # fmt: skip
    assert len(jobs) <= 100
    assert all(j["kind"] == "import" for j in _get(server, "/v0/jobs?kind=import").json()["jobs"])
    assert second not in _get(server, "/v0/jobs?status=error").text
    assert _get(server, "/v0/jobs?created_before=2000-01-01T00:00:00Z").json()["jobs"] == []
    assert second in _get(server, "/v0/jobs?created_after=2000-01-01 00:00:00").text
    assert second not in json.dumps(_get(server, "/v0/jobs?kind=delete_data").json())


def test_unknown_job_is_a_json_404(server: LocalServer) -> None:
    answer = _get(server, "/v0/jobs/0b6f1d0e-no-such-job")
    assert answer.status_code == 404
    assert "error" in answer.json()


def test_jobs_need_a_token(server: LocalServer) -> None:
    job = _append(server, ndjson(event(message="needs a token")))["id"]
    for path in (f"/v0/jobs/{job}", "/v0/jobs"):
        answer = requests.get(f"{server.url}{path}", timeout=10)
        assert answer.status_code in (401, 403), answer.text


def test_jobs_visible_only_to_tokens_that_see_the_datasource(server: LocalServer) -> None:
    job = _append(server, ndjson(event(message="private job")))["id"]
    traces_reader = server.create_token("jobs_traces_reader", ["DATASOURCES:READ:traces"])
    assert _get(server, f"/v0/jobs/{job}", traces_reader).status_code == 404
    assert job not in _get(server, "/v0/jobs", traces_reader).text
    logs_reader = server.create_token("jobs_logs_reader", ["DATASOURCES:READ:tb_logs"])
    assert _get(server, f"/v0/jobs/{job}", logs_reader).status_code == 200
    assert job in _get(server, "/v0/jobs", logs_reader).text


def test_row_filtered_tokens_see_only_their_own_imports(server: LocalServer) -> None:
    other = _append(server, ndjson(event(message="someone else's")))["id"]
    scoped = server.create_token(
        "jobs_app_a", ["DATASOURCES:APPEND:tb_logs", "DATASOURCES:READ:tb_logs:app_name = 'a'"]
    )
    own = _append(server, ndjson(event(message="mine", app_name="a")), token=scoped)["id"]
    assert _get(server, f"/v0/jobs/{other}", scoped).status_code == 404
    mine = _get(server, f"/v0/jobs/{own}", scoped)
    assert mine.status_code == 200, mine.text
    assert mine.json()["statistics"] == {"row_count": None, "bytes": None}
    listed = _get(server, "/v0/jobs", scoped).text
    assert own in listed and other not in listed


def test_the_registry_is_bounded() -> None:
    registry = jobs_api.Jobs(keep=3)
    ids = [registry.add(kind="import", datasource=("t_1", "ds"), creator="x").id
           for _ in range(5)]  # fmt: skip
    assert registry.get(ids[0]) is None and registry.get(ids[1]) is None
    assert [j.id for j in registry.recent()] == ids[:1:-1]


def test_job_ids_never_carry_the_token(server: LocalServer) -> None:
    job = _append(server, ndjson(event(message="no secrets")))["id"]
    assert server.admin_token not in _get(server, f"/v0/jobs/{job}").text
    assert server.admin_token not in _get(server, "/v0/jobs").text
