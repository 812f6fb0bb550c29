"""pytest plugin for python-json-logger's suite: ``JsonFormatter`` is ``TinybirdJsonFormatter``.

Loaded with ``-p pjl_swap`` by ``fetch.run_suite`` (never collected by the project's own
pytest run: the name is not ``conftest``/``test_*``).  On import it replaces
``pythonjsonlogger.json.JsonFormatter`` before the suite's modules import it, so every
``JsonFormatter(...)`` there, and dictConfig's ``"()": "pythonjsonlogger.json.JsonFormatter"``,
builds the swapped class.  Tests parametrized over python-json-logger's other formatters
(``OrjsonFormatter``, ``MsgspecFormatter``) are deselected: they do not test tblog.

``TBLOG_PJL_LAYOUT`` picks what stands in for ``JsonFormatter``:

* ``lifted`` (the default): ``LiftedExtra``, ``TinybirdJsonFormatter`` with one change in
  its ``process_log_record`` hook: the keys of the row's ``extra`` object move to the top
  level (the row's own columns win a clash).  The suite reads extras at the top level; this
  is the one layout difference the adapter undoes, so that everything else (options,
  encoding, exceptions) is compared.
* ``nested``: ``TinybirdJsonFormatter`` itself, unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import pythonjsonlogger.json

from tblog.formatters import TinybirdJsonFormatter


class LiftedExtra(TinybirdJsonFormatter):
    """``TinybirdJsonFormatter`` whose ``extra`` keys are printed at the top level."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        extra = log_data.pop(self.rename_fields.get("extra", "extra"), None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                log_data.setdefault(key, value)
        return super().process_log_record(log_data)  # type: ignore[no-any-return]


LAYOUT = os.environ.get("TBLOG_PJL_LAYOUT", "lifted")
if LAYOUT not in ("lifted", "nested"):
    raise RuntimeError(f"TBLOG_PJL_LAYOUT must be 'lifted' or 'nested', not {LAYOUT!r}")
SWAPPED: type[TinybirdJsonFormatter] = LiftedExtra if LAYOUT == "lifted" else TinybirdJsonFormatter
pythonjsonlogger.json.JsonFormatter = SWAPPED  # type: ignore[misc]


def pytest_report_header() -> str:
    return f"pythonjsonlogger.json.JsonFormatter is {SWAPPED.__module__}.{SWAPPED.__qualname__}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of python-json-logger's other formatters."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        class_ = callspec.params.get("class_", SWAPPED) if callspec is not None else SWAPPED
        (keep if class_ is SWAPPED else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
