"""python-json-logger's own test suite, run against ``TinybirdJsonFormatter`` (issue 17).

``tests/pjl_suite/fetch.py`` downloads the pinned sdist from PyPI (once, into ``.cache/``)
and runs its ``test_formatters.py`` and ``test_dictconfig.py`` with ``JsonFormatter``
replaced by ``TinybirdJsonFormatter`` (its ``extra`` object printed at the top level: see
``tests/pjl_suite/pjl_swap.py``).  Every test must pass except the ones listed below, each
with the reason; and each listed one must really fail, so the list cannot go stale.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from tests.pjl_suite import fetch

_KEYS = (
    "asserts the line's keys are exactly the fields fmt names; a tb_logs row always has every "
    "column (level, logger, timestamp, ...) and fmt's fields are in its extra object"
)
_EXC = (
    "reads the traceback from a top-level exc_info; a tb_logs row holds the exception as "
    "the exception object (type, message, stacktrace: notes, groups and exc_info_as_array "
    "apply there), and has exc_info (in extra) only when fmt names it"
)
#: test id -> why TinybirdJsonFormatter's documented row layout makes it fail.
EXPECTED_DIFFERENCES: dict[str, str] = {
    "test_formatters.py::test_percentage_format[LiftedExtra]": _KEYS,
    "test_formatters.py::test_string_template_format[LiftedExtra]": _KEYS,
    "test_formatters.py::test_comma_format[LiftedExtra]": _KEYS,
    "test_formatters.py::test_sequence_list_format[LiftedExtra]": _KEYS,
    "test_formatters.py::test_sequence_tuple_format[LiftedExtra]": _KEYS,
    "test_formatters.py::test_rename_preserve_order[LiftedExtra]": (
        "asserts the renamed first fmt field is the line's first key; a row's columns come "
        "first, in the datasource's order, and fmt's fields are in extra"
    ),
    "test_formatters.py::test_default_encoder_with_timestamp[LiftedExtra]": (
        "expects timestamp=True's value (2017-07-14T02:40:00+00:00) under timestamp; the "
        "row's timestamp column is ISO-8601 UTC with microseconds (2017-07-14T02:40:00.000000Z) "
        "and timestamp=True's field is extra.timestamp"
    ),
    "test_formatters.py::test_exc_info[LiftedExtra]": _EXC,
    "test_formatters.py::test_exc_info_renamed_not_required[LiftedExtra]": _EXC,
    "test_formatters.py::test_exc_info_as_array[LiftedExtra]": _EXC,
    "test_formatters.py::test_log_dict_not_modified[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_notes[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_notes_as_array[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_groups[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_groups_as_array[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_groups_with_notes[LiftedExtra]": _EXC,
    "test_formatters.py::test_exception_groups_with_notes_as_array[LiftedExtra]": _EXC,
}
#: Listed tests the suite itself skips before Python 3.11 (exception notes and groups).
NEEDS_311 = {name for name in EXPECTED_DIFFERENCES if "::test_exception_" in name}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_python_json_loggers_suite_passes_but_for_the_listed_differences(tmp_path: Path) -> None:
    installed = importlib.metadata.version("python-json-logger")
    assert installed == fetch.PJL_VERSION, (
        f"python-json-logger {installed} is installed; the suite and EXPECTED_DIFFERENCES are "
        f"python-json-logger {fetch.PJL_VERSION}'s: update PJL_VERSION and SDIST_SHA256 in "
        "tests/pjl_suite/fetch.py and re-check the list"
    )
    junit = tmp_path / "junit.xml"
    proc = fetch.run_suite(junit)
    assert junit.is_file(), proc.stdout + proc.stderr
    result = fetch.outcomes(junit)
    assert result["test_dictconfig.py::test_external_reference_support"] == "passed"
    swapped = [name for name in result if name.endswith("LiftedExtra]")]
    assert len(swapped) >= 60, (len(swapped), proc.stdout[-2000:])  # the swap took effect
    assert not [n for n in result if "Orjson" in n or "Msgspec" in n]

    failed = {n for n, outcome in result.items() if outcome in ("failed", "error")}
    unexpected = sorted(failed - EXPECTED_DIFFERENCES.keys())
    assert not unexpected, f"{unexpected}\n{proc.stdout[-6000:]}"
    old = sys.version_info < (3, 11)
    stale = sorted(
        name
        for name in EXPECTED_DIFFERENCES
        if result.get(name) != ("skipped" if old and name in NEEDS_311 else "failed")
    )
    assert not stale, f"listed as differences but not failing: {stale}"
    ran = [outcome for outcome in result.values() if outcome != "skipped"]
    formatter_tests = [
        o for n, o in result.items() if n.startswith("test_formatters.py::") and o != "skipped"
    ]
    # the README's figure: 54/71 on CPython 3.11+ (54/65 on 3.10, which skips six)
    assert formatter_tests.count("passed") == len(formatter_tests) - len(
        [n for n in EXPECTED_DIFFERENCES if not (old and n in NEEDS_311)]
    )
    assert ran.count("passed") + len(failed) == len(ran)


def test_the_readme_lists_every_expected_difference() -> None:
    """The README names each test of the suite that fails by design (issue 17.1)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    names = {name.split("::")[-1].split("[")[0] for name in EXPECTED_DIFFERENCES}
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"README.md does not list {missing}"
