"""Pipes and endpoints of ``tblog local``: the ``.pipe`` parser, template binding (with
the inputs an attacker would send), the Pipes API, the shipped pipes and token scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tblog.local.datafile import DatafileError
from tblog.local.pipes import TemplateError, load_pipe, parse_pipe, render
from tblog.local.pipes_api import DEFAULT_PIPES
from tblog.local.server import LocalServer
from tests.localserver import event, ndjson, post, serve

# -- the file format ----------------------------------------------------------------------

TWO_NODES = """
# a comment
DESCRIPTION >
    Errors per app

NODE only_errors
DESCRIPTION >
    The ERROR rows
SQL >
    SELECT app_name, message FROM tb_logs WHERE level = 'ERROR'

NODE per_app
SQL >
    %
    SELECT app_name, count() AS n FROM only_errors
    {% if defined(app) %} WHERE app_name = {{ String(app) }} {% end %}
    GROUP BY app_name ORDER BY app_name
TYPE endpoint
TOKEN "reader" READ
"""


def test_parse_nodes_descriptions_and_endpoint() -> None:
    pipe = parse_pipe(TWO_NODES, "errors_per_app")
    assert pipe.description == "Errors per app"
    assert [n.name for n in pipe.nodes] == ["only_errors", "per_app"]
    assert pipe.nodes[0].description == "The ERROR rows"
    assert pipe.endpoint is not None and pipe.endpoint.name == "per_app"
    sql = pipe.query({})
    assert sql.startswith("WITH only_errors AS (\nSELECT app_name, message FROM tb_logs")
    assert "WHERE app_name" not in sql
    assert "WHERE app_name = 'web'" in pipe.query({"app": "web"})
    assert pipe.params() == [{"name": "app", "type": "String"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SQL >\n    SELECT 1\n", "outside a NODE"),
        ("NODE a\nSQL >\n    SELECT 1\nTYPE materialized\n", "materialized"),
        ("NODE a\nSQL >\n    SELECT 1\nNODE a\nSQL >\n    SELECT 2\n", "twice"),
        ("NODE a\n", "no SQL"),
        ("", "no NODE"),
        ("NODE a b\nSQL >\n    SELECT 1\n", "invalid node name"),
        ("NODE a\nSQL >\n    SELECT 1\nENGINE MergeTree\n", "ENGINE"),
        ("NODE a\nSQL >\n    SELECT 1\nTYPE endpoint\nNODE b\nSQL >\n    SELECT 2\n"
         "TYPE endpoint\n", "more than one endpoint"),
    ],
)  # fmt: skip
def test_bad_datafiles_are_refused(text: str, message: str) -> None:
    with pytest.raises(DatafileError, match=message):
        parse_pipe(text, "p")


def test_shipped_pipes_parse_and_declare_their_parameters() -> None:
    names = sorted(p.stem for p in DEFAULT_PIPES.glob("*.pipe"))
    assert names == ["level_counts", "recent_errors", "trace_rows"]
    params = {n: {p["name"] for p in load_pipe(DEFAULT_PIPES / f"{n}.pipe").params()}
              for n in names}  # fmt: skip
    assert params["recent_errors"] == {"app", "since", "min_level_no", "limit"}
    assert params["trace_rows"] == {"trace_id", "limit"}
    assert params["level_counts"] == {"step_seconds", "from_time", "to_time", "app"}


# -- template binding -----------------------------------------------------------------------


def _one(expr: str, params: dict[str, str]) -> str:
    return render("%\n" + expr, params)[1:]


@pytest.mark.parametrize(
    ("expr", "params", "expected"),
    [
        ("{{ String(x, 'd') }}", {}, "'d'"),
        ("{{ String(x, 'd') }}", {"x": "a'b"}, "'a\\'b'"),
        ("{{ String(x) }}", {"x": "back\\slash"}, "'back\\\\slash'"),
        ("{{ String(x) }}", {"x": "line\nbreak"}, "'line\\nbreak'"),
        ("{{ Int32(n, 5) }}", {}, "5"),
        ("{{ Int32(n, 5) }}", {"n": "-7"}, "-7"),
        ("{{ UInt8(n) }}", {"n": "255"}, "255"),
        ("{{ Float64(f) }}", {"f": "1.5e3"}, "1500.0"),
        ("{{ Boolean(b, False) }}", {}, "0"),
        ("{{ Boolean(b) }}", {"b": "true"}, "1"),
        ("{{ Date(d) }}", {"d": "2026-01-02"}, "'2026-01-02'"),
        ("{{ DateTime(t) }}", {"t": "2026-01-02T03:04:05"}, "'2026-01-02 03:04:05'"),
        ("{{ DateTime64(t) }}", {"t": "2026-01-02 03:04:05.25"},
         "'2026-01-02 03:04:05.250000'"),
        ("{{ Array(xs, 'Int32', default='1,2') }}", {}, "[1, 2]"),
        ("{{ Array(xs, 'String') }}", {"xs": "a,b'c"}, "['a', 'b\\'c']"),
        ("{% if defined(x) %}yes{% else %}no{% end %}", {}, "no"),
        ("{% if defined(x) %}yes{% else %}no{% end %}", {"x": ""}, "yes"),
        ("{% if x == 'a' %}A{% elif x == 'b' %}B{% end %}", {"x": "b"}, "B"),
        ("{% if Int32(n, 0) > 3 and not defined(y) %}big{% end %}", {"n": "4"}, "big"),
        ("{# a comment #}x", {}, "x"),
    ],
)  # fmt: skip
def test_parameters_become_typed_literals(expr: str, params: dict[str, str],
                                          expected: str) -> None:  # fmt: skip
    assert _one(expr, params) == expected


ATTACKS = [
    "' OR 1=1 --",
    "x' OR '1'='1",
    "\\' OR 1=1 --",
    "'); SELECT * FROM system.tables; --",
    "x'\n-- comment\nOR 1=1",
    "x\\",
    "x\x00' OR 1=1",
    "x` OR 1=1",
    "x\u2019 OR 1=1",
    "{{ String(y) }}",
    "{% end %}' OR 1=1",
]


@pytest.mark.parametrize("value", ATTACKS)
def test_a_string_value_is_one_literal_whatever_it_holds(value: str) -> None:
    import sqlglot

    sql = render("%\nSELECT 1 WHERE a = {{ String(x) }}", {"x": value})
    tree = sqlglot.parse_one(sql, read="clickhouse")
    literal = tree.args["where"].this.expression
    assert isinstance(literal, sqlglot.exp.Literal) and literal.is_string
    assert literal.this == value.replace("\x00", "\\0") or literal.this.startswith("x")


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("{{ String(n) }}", "lone \ud800 surrogate"),
        ("{{ Int32(n) }}", "1 OR 1=1"),
        ("{{ Int32(n) }}", "1; SELECT 1"),
        ("{{ Int32(n) }}", "0x10"),
        ("{{ Int32(n) }}", "2147483648"),
        ("{{ UInt8(n) }}", "-1"),
        ("{{ Float64(n) }}", "nan"),
        ("{{ Float64(n) }}", "1) OR (1"),
        ("{{ Boolean(n) }}", "yes please"),
        ("{{ Date(n) }}", "2026-01-02' OR '1'='1"),
        ("{{ DateTime(n) }}", "2026-01-02 00:00:00') OR 1=1 --"),
        ("{{ DateTime64(n) }}", "now()"),
        ("{{ Array(n, 'Int32') }}", "1,2) OR (1"),
    ],
)  # fmt: skip
def test_a_value_that_does_not_fit_its_type_is_refused(expr: str, value: str) -> None:
    with pytest.raises(TemplateError, match="Error validating"):
        _one(expr, {"n": value})


def test_a_missing_parameter_without_default_is_an_error() -> None:
    with pytest.raises(TemplateError, match="Required parameter is not defined: 'x'"):
        _one("{{ String(x) }}", {})


@pytest.mark.parametrize(
    "template",
    [
        "{{ x }}",
        "{{ columns(x) }}",
        "{{ column(x, 'a') }}",
        "{{ sql_unescape(String(x), '%') }}",
        "{{ __import__('os').system('id') }}",
        "{{ String(x).__class__ }}",
        "{{ String(x) + '1' }}",
        "{{ String(x, default=open('/etc/passwd')) }}",
        "{{ String(x, 'a', onerror=1) }}",
        "{{ String('literal') }}",
        "{{ Array(x, 'Nope') }}",
        "{% set x = 1 %}",
        "{% for i in range(3) %}{% end %}",
        "{% if x.__class__ %}{% end %}",
        "{% if defined(x) %}",
        "{% end %}",
        "{% else %}",
        "{% if defined(x) %}{% else %}{% elif y %}{% end %}",
        "{{ String(x }}",
        "{% if open('f') %}{% end %}",
    ],
)
def test_templates_beyond_typed_parameters_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        render("%\nSELECT " + template, {"x": "1"})
    with pytest.raises(TemplateError):  # and a pipe holding one cannot be made
        parse_pipe(f"NODE n\nSQL >\n    %\n    SELECT {template}\n", "p")


def test_sql_without_the_percent_line_is_not_a_template() -> None:
    assert render("SELECT '{{ String(x) }}'", {"x": "1"}) == "SELECT '{{ String(x) }}'"


# -- the API ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("pipes"))


@pytest.fixture(scope="module")
def rows(server: LocalServer) -> None:
    body = ndjson(
        event(app_name="web", level="ERROR", level_no=40, message="boom", trace_id="t1",
              timestamp="2026-11-22T10:00:00.000001Z",
              event_id="00000000-0000-4000-8000-000000000001",
              extra={"tenant_id": "acme"}),
        event(app_name="web", level="INFO", level_no=20, message="fine", trace_id="t1",
              timestamp="2026-11-22T10:30:00Z", event_id="00000000-0000-4000-8000-000000000002",
              extra={"tenant_id": "acme"}),
        event(app_name="api", level="CRITICAL", level_no=50, message="down", trace_id="t2",
              timestamp="2026-11-22T11:15:00Z", event_id="00000000-0000-4000-8000-000000000003",
              extra={"tenant_id": "other"}),
        event(app_name="api", level="WARNING", level_no=30, message="slow",
              timestamp="2026-11-22T11:20:00Z", event_id="00000000-0000-4000-8000-000000000004",
              extra={"tenant_id": "other"}),
    )  # fmt: skip
    assert post(server, body).status_code == 200


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _get(server: LocalServer, path: str, token: str | None = None,
         **params: str) -> requests.Response:  # fmt: skip
    return requests.get(f"{server.url}{path}", params=params,
                        headers=_auth(token or server.admin_token), timeout=30)  # fmt: skip


def _data(server: LocalServer, pipe: str, token: str | None = None,
          **params: str) -> list[dict[str, Any]]:  # fmt: skip
    r = _get(server, f"/v0/pipes/{pipe}.json", token, **params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _token(server: LocalServer, *scopes: str, row_filter: str = "") -> str:
    data: dict[str, Any] = {"name": "t", "scope": list(scopes)}
    if row_filter:
        data["filter"] = row_filter
    r = requests.post(f"{server.url}/v0/tokens", data=data, headers=_auth(server.admin_token),
                      timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _push(server: LocalServer, name: str, text: str, token: str | None = None,
          **params: str) -> requests.Response:  # fmt: skip
    return requests.post(f"{server.url}/v0/pipes", params={"name": name, **params},
                         data=text.encode(), headers=_auth(token or server.admin_token),
                         timeout=30)  # fmt: skip


def test_shipped_pipes_are_served(server: LocalServer, rows: None) -> None:
    listed = _get(server, "/v0/pipes").json()["pipes"]
    assert {"recent_errors", "trace_rows", "level_counts"} <= {p["name"] for p in listed}
    assert server.load_errors == []
    errors = _data(server, "recent_errors")
    assert [r["message"] for r in errors] == ["down", "boom"]  # newest first
    assert [r["message"] for r in _data(server, "recent_errors", app="web")] == ["boom"]
    assert [
        r["message"]
        for r in _data(server, "recent_errors", min_level_no="30", since="2026-11-22 11:00:00")
    ] == ["slow", "down"]
    trace = _data(server, "trace_rows", trace_id="t1")
    assert [(r["ts_us"], r["message"]) for r in trace] == [
        ("1795341600000001", "boom"),
        ("1795343400000000", "fine"),
    ]
    counts = _data(server, "level_counts", step_seconds="3600", app="api")
    assert [(r["bucket_us"], r["level"], int(r["n"])) for r in counts] == [
        ("1795345200000000", "CRITICAL", 1),
        ("1795345200000000", "WARNING", 1),
    ]
    counts = _data(server, "level_counts", from_time="2026-11-22 10:30:00",
                   to_time="2026-11-22 11:16:00", step_seconds="86400")  # fmt: skip
    assert sorted((r["level"], int(r["n"])) for r in counts) == [("CRITICAL", 1), ("INFO", 1)]


def test_formats_csv_and_ndjson(server: LocalServer, rows: None) -> None:
    r = _get(server, "/v0/pipes/trace_rows.csv", trace_id="t2")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/csv"
    assert r.text.splitlines()[0].startswith('"ts_us","event_id"')
    r = _get(server, "/v0/pipes/trace_rows.ndjson", trace_id="t2")
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line)["message"] for line in r.text.splitlines()] == ["down"]
    r = _get(server, "/v0/pipes/trace_rows.json", trace_id="t2")
    assert r.json()["rows"] == 1 and r.json()["meta"][0]["name"] == "ts_us"


def test_post_takes_parameters_as_a_form(server: LocalServer, rows: None) -> None:
    r = requests.post(f"{server.url}/v0/pipes/trace_rows.json", data={"trace_id": "t2"},
                      headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert [row["message"] for row in r.json()["data"]] == ["down"]


@pytest.mark.parametrize("value", ATTACKS)
def test_injection_through_an_endpoint_reads_nothing_more(server: LocalServer, rows: None,
                                                          value: str) -> None:  # fmt: skip
    r = _get(server, "/v0/pipes/trace_rows.json", trace_id=value)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "1 OR 1=1"}, "Error validating"),
        ({"limit": "1; DROP TABLE tb_logs"}, "Error validating"),
        ({"since": "2026-01-01' OR '1'='1"}, "Error validating"),
        ({"min_level_no": "0) OR (1"}, "Error validating"),
        ({"q": "SELECT * FROM system.tables"}, "not supported"),
    ],
)
def test_bad_values_are_400(server: LocalServer, rows: None, params: dict[str, str],
                            message: str) -> None:  # fmt: skip
    r = _get(server, "/v0/pipes/recent_errors.json", **params)
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert _get(server, "/v0/pipes/trace_rows.json").status_code == 400  # trace_id required


def test_push_a_datafile_then_read_update_and_delete_it(server: LocalServer,
                                                        rows: None) -> None:  # fmt: skip
    assert _push(server, "errors_per_app", TWO_NODES).status_code == 200
    got = _get(server, "/v0/pipes/errors_per_app").json()
    assert got["type"] == "endpoint"
    assert [n["node_type"] for n in got["nodes"]] == ["standard", "endpoint"]
    assert got["params"] == [{"name": "app", "type": "String"}]
    assert [(r["app_name"], int(r["n"])) for r in _data(server, "errors_per_app")] == [("web", 1)]
    assert _push(server, "errors_per_app", TWO_NODES).status_code == 409
    changed = TWO_NODES.replace("level = 'ERROR'", "level_no >= 40")
    assert _push(server, "errors_per_app", changed, force="true").status_code == 200
    assert [r["app_name"] for r in _data(server, "errors_per_app")] == ["api", "web"]
    assert (server.store.data_dir / "pipes" / "errors_per_app.json").exists()
    r = requests.delete(f"{server.url}/v0/pipes/errors_per_app",
                        headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 204
    assert _get(server, "/v0/pipes/errors_per_app").status_code == 404
    assert _get(server, "/v0/pipes/errors_per_app.json").status_code == 404
    assert not (server.store.data_dir / "pipes" / "errors_per_app.json").exists()


def test_push_json_as_tb_push_sends_it_and_set_the_endpoint(server: LocalServer,
                                                            rows: None) -> None:  # fmt: skip
    body = {
        "name": "by_level",
        "description": "d",
        "nodes": [
            {
                "name": "by_level_0",
                "sql": "SELECT level, count() AS n FROM tb_logs GROUP BY level ORDER BY level",
                "description": "",
                "type": "standard",
            }
        ],
    }
    r = requests.post(f"{server.url}/v0/pipes", params={"force": "true"}, data=json.dumps(body),
                      headers={**_auth(server.admin_token), "Content-Type": "application/json"},
                      timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "default"
    assert _get(server, "/v0/pipes/by_level.json").status_code == 400  # no endpoint yet
    node_id = r.json()["nodes"][0]["id"]
    r = requests.post(f"{server.url}/v0/pipes/by_level/nodes/{node_id}/endpoint",
                      headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.json()["type"] == "endpoint"
    assert len(_data(server, "by_level")) == 4


@pytest.mark.parametrize(
    ("sql", "status_text"),
    [
        ("SELECT * FROM system.tables", "refused"),
        ("SELECT * FROM file('/etc/passwd')", "refused"),
        ("SELECT 1; DROP TABLE tb_logs", "refused"),
        ("INSERT INTO tb_logs SELECT * FROM tb_logs", "refused"),
        ("%\nSELECT {{ x }}", "only typed parameters"),
    ],
)
def test_a_pipe_whose_sql_is_refused_cannot_be_made(server: LocalServer, sql: str,
                                                    status_text: str) -> None:  # fmt: skip
    text = "NODE n\nSQL >\n" + "".join(f"    {line}\n" for line in sql.splitlines())
    r = _push(server, "evil", text + "TYPE endpoint\n")
    assert r.status_code == 400
    assert status_text in r.json()["error"]
    assert _get(server, "/v0/pipes/evil").status_code == 404


def test_pipes_read_scope_reads_its_pipe_only(server: LocalServer, rows: None) -> None:
    token = _token(server, "PIPES:READ:recent_errors")
    assert len(_data(server, "recent_errors", token)) == 2
    assert _get(server, "/v0/pipes/trace_rows.json", token, trace_id="t1").status_code == 403
    assert [p["name"] for p in _get(server, "/v0/pipes", token).json()["pipes"]] == [
        "recent_errors"
    ]
    assert _get(server, "/v0/pipes/recent_errors", token).status_code == 200
    assert _get(server, "/v0/pipes/trace_rows", token).status_code == 403
    # the pipe runs with the workspace's tables, but the token has no SQL access of its own
    r = requests.get(f"{server.url}/v0/sql", params={"q": "SELECT count() FROM tb_logs"},
                     headers=_auth(token), timeout=30)  # fmt: skip
    assert r.status_code == 403
    # and it manages nothing
    assert _push(server, "mine", TWO_NODES, token).status_code == 403
    r = requests.delete(f"{server.url}/v0/pipes/recent_errors", headers=_auth(token), timeout=30)
    assert r.status_code == 403


def test_a_datasource_read_token_cannot_call_endpoints(server: LocalServer, rows: None) -> None:
    token = _token(server, "DATASOURCES:READ:tb_logs")
    r = _get(server, "/v0/pipes/recent_errors.json", token)
    assert r.status_code == 403
    assert "PIPES:READ" in r.json()["error"]
    assert _get(server, "/v0/pipes", token).json()["pipes"] == []


def test_the_row_filter_applies_to_endpoints(server: LocalServer, rows: None) -> None:
    token = _token(
        server,
        "PIPES:READ:recent_errors",
        "PIPES:READ:trace_rows",
        row_filter="JSONExtractString(extra, 'tenant_id') = 'acme'",
    )
    assert [r["message"] for r in _data(server, "recent_errors", token)] == ["boom"]
    assert _data(server, "trace_rows", token, trace_id="t2") == []


def test_no_token_or_a_wrong_one_is_refused(server: LocalServer) -> None:
    r = requests.get(f"{server.url}/v0/pipes/recent_errors.json", timeout=30)
    assert r.status_code == 403
    assert _get(server, "/v0/pipes/recent_errors.json", "p.nope").status_code == 403
    assert _get(server, "/v0/pipes", "p.nope").status_code == 403


def test_sql_tables_lists_what_a_query_reads(server: LocalServer) -> None:
    q = "WITH a AS (SELECT * FROM tb_logs) SELECT * FROM a JOIN other.t USING x"
    r = requests.post(f"{server.url}/v0/sql_tables", data={"q": q, "raising": "true"},
                      headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert sorted(map(tuple, r.json()["tables"])) == [("", "tb_logs"), ("other", "t")]
    bad = {"q": "SELECT FROM WHERE (", "raising": "true"}
    r = requests.post(f"{server.url}/v0/sql_tables", data=bad,
                      headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 400
    r = requests.post(f"{server.url}/v0/sql_tables", data={"q": q}, timeout=30)
    assert r.status_code == 403
    huge = {"q": "SELECT " + "1+" * 200_000 + "1", "raising": "true"}
    r = requests.post(f"{server.url}/v0/sql_tables", data=huge,
                      headers=_auth(server.admin_token), timeout=30)  # fmt: skip
    assert r.status_code == 400
