"""The per-fault figures table (``benchmarks.faults``) holds together, in its tiny configuration.

No latency is asserted: figures come from ``python -m benchmarks.faults``.  What must hold is
structural: one row per fault, nothing lost without being counted (also at exit), nothing
arrived twice, a refusal counted under its status, and exit bounded by ``shutdown_timeout``.
"""

from __future__ import annotations

import pytest

from benchmarks import faults

FAULTS = ["healthy", "503", "429", "reset", "slow", "413", "403", "black_hole"]
#: What exit may add to shutdown_timeout: the sender thread's join and the interpreter's end.
EXIT_MARGIN = 1.5


@pytest.mark.slow
def test_every_fault_has_a_row_and_no_loss_goes_uncounted() -> None:
    config = faults.Config.quick()
    rows = faults.run(config)
    assert [row.key for row in rows] == FAULTS
    by_key = {row.key: row for row in rows}

    text = faults.render(rows, config)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(FAULTS)  # the header, then one line per fault
    for row, line in zip(rows, table[1:]):
        assert line.startswith(f"| {row.label} |")

    for row in rows:
        assert row.logged >= config.events, row
        assert row.lost_uncounted == 0, row
        assert row.duplicates == 0, row
        assert row.exit_lost_uncounted == 0, row
        assert row.exit_seconds < config.shutdown_timeout + EXIT_MARGIN, row
        assert len(row.latencies) == config.events

    for key in ("healthy", "503", "429", "reset", "slow", "black_hole"):  # faults that clear
        assert by_key[key].arrived == by_key[key].logged, by_key[key]
        assert by_key[key].dropped == {}, by_key[key]

    refused = by_key["403"]
    assert refused.arrived == 0
    assert refused.dropped == {"http_403": refused.logged}
    assert set(refused.answers) == {"403"}  # refused batches are not retried
    assert refused.exit_dropped == {"http_403": config.exit_events}

    too_large = by_key["413"]
    assert too_large.dropped == {"too_large": 1}  # only the event no split can make fit
    assert too_large.arrived == config.events
    assert too_large.answers.get("413", 0) > 0  # batches were split, not dropped
