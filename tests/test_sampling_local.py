"""The ``sample_rate`` column in ``tblog local`` (real chDB): counts corrected in SQL.

Sampled rows carry their rate; rows that were not sampled leave the column to its default,
1, so ``sum(1 / sample_rate)`` over every row estimates how many records were logged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import pytest

import tblog
from tblog.local.server import LocalServer
from tests.localserver import scalar, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve(tmp_path_factory.mktemp("local-sampling"))


@pytest.mark.slow
def test_sum_of_inverse_rates_estimates_the_logged_count(server: LocalServer) -> None:
    handler = tblog.TinybirdLoggingHandler(
        server.url, server.admin_token, "sampling", sample={"app.db": {"DEBUG": 0.1}}
    )
    assert handler._gate is not None
    handler._gate._rand = random.Random(5).random
    db, web = logging.getLogger("app.db"), logging.getLogger("app.web")
    for log in (db, web):
        log.propagate = False
        log.setLevel(logging.DEBUG)
        log.addHandler(handler)
    try:
        for i in range(5000):
            db.debug("query %d", i)
        for i in range(300):
            web.debug("request %d", i)
        assert handler.flush(60)
        sampled = handler.stats()["sampled"]
    finally:
        for log in (db, web):
            log.removeHandler(handler)
        handler.close()

    where = "app_name = 'sampling'"
    rows = scalar(server, f"SELECT count() FROM tb_logs WHERE {where}")
    assert rows + sampled == 5300
    assert scalar(server, "SELECT min(sample_rate) FROM tb_logs WHERE logger = 'app.web'") == 1
    rates = scalar(
        server, "SELECT groupUniqArray(sample_rate) FROM tb_logs WHERE logger = 'app.db'"
    )
    assert rates == [0.1]
    estimate = scalar(server, f"SELECT sum(1 / sample_rate) FROM tb_logs WHERE {where}")
    assert 4500 + 300 <= estimate <= 5500 + 300
