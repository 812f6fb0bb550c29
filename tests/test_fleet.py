"""The fleet simulation runs: a few real senders against a rate-limited loopback endpoint.

No figure is asserted (those come from `make bench`); what must hold is that nothing is lost
or duplicated while the endpoint answers 429s.
"""

from __future__ import annotations

from benchmarks import fleet


def test_a_small_fleet_against_a_tight_limit_loses_and_duplicates_nothing() -> None:
    result = fleet.run(senders=12, limit_rps=4, seconds=2.0, rate=20.0)
    assert result["rate_limited"] > 0  # the limit was actually hit
    assert result["logged"] == result["delivered"] == 12 * 40
    assert result["duplicates"] == 0 and result["lost"] == 0
