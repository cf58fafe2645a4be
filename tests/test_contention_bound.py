"""benchmarks/contention_bound.py: the ideal parallel program whose slowdown beside busy processes says
what the scheduler allows; its shares, its arithmetic and its report (no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

import benchmarks.contention_bound as bound


@pytest.mark.parametrize("cores, threads, busy, slowdown", [
    (2, 1, 2, 3.0),  # one thread of three on two cores: 2/3 of a core against two alone
    (2, 2, 2, 2.0),  # two of four: one core
    (2, 4, 2, 1.5),  # four of six: 4/3 of a core
    (2, 2, 0, 1.0),  # nothing beside it
    (4, 2, 0, 2.0),  # two threads cannot use four idle cores
    (4, 8, 4, 1.5),
])
def test_fair_shares(cores, threads, busy, slowdown):
    assert bound.fair_share_slowdown(cores, threads, busy) == pytest.approx(slowdown)


def test_the_regions_do_the_arithmetic_asked_of_them():
    """count regions of chunks chains: each chunk's value is the recurrence applied count x iterations
    times, chunks past `chunks` untouched (so a region's work is what the rate divides by)."""
    kernel = bound._kernel()
    out = np.array([1.0, 2.0, 3.0, 4.0])
    kernel(3, 3, 5, out)
    expected = [1.0, 2.0, 3.0]
    for _ in range(15):
        expected = [x * 0.9999999 + 1e-7 for x in expected]
    assert out[:3].tolist() == pytest.approx(expected, rel=0, abs=1e-15)
    assert out[3] == 4.0


def test_a_measurement_reports_every_region_and_thread_count(monkeypatch):
    """Alone and beside the busy processes for each region length, on 1, cores and 2x cores threads;
    the report is a Markdown row per region with the fair-share line under it."""
    import benchmarks.run as run

    monkeypatch.setattr(bound, "cores", lambda: 2)
    monkeypatch.setattr(run, "cores", lambda: 2)
    monkeypatch.setattr(bound, "SECONDS", 0.005)
    monkeypatch.setattr(run, "SETTLE_SECONDS", 0.01)
    calls = []
    rate = bound.IdealProgram.rate

    def recorded(self, threads, chunks, region_ms, busy=False):
        calls.append((threads, chunks, region_ms, busy))
        return rate(self, threads, chunks, region_ms, busy)

    monkeypatch.setattr(bound.IdealProgram, "rate", recorded)
    rows = bound.measure(region_ms=(0.5, 2.0), rounds=2)
    assert [row["region_ms"] for row in rows] == [0.5, 2.0]
    # per round: alone on one thread per core, then beside (waiting threads sleeping at once, as netc's do
    # beside busy processes) on 1, 2 and 4 threads (chunks at least one per core)
    assert calls[:4] == [(2, 2, 0.5, False), (1, 2, 0.5, True), (2, 2, 0.5, True), (4, 4, 0.5, True)]
    assert len(calls) == 2 * 2 * 4
    for row in rows:
        assert row["alone_cores"] > 0
        assert sorted(row["slowdowns"]) == [1, 2, 4]
        for k, slowdown in row["slowdowns"].items():
            low, high = row["ranges"][k]
            assert 0 < low <= slowdown <= high
    text = bound.render(rows)
    lines = text.splitlines()
    assert lines[0] == ("| parallel region | alone (cores of work) | 1 thread beside | 2 threads beside "
                        "| 4 threads beside |")
    assert lines[2].startswith("| 0.5 ms | ") and lines[3].startswith("| 2 ms | ")
    assert "equal shares with no waits would give 1 thread 3.00×, 2 threads 2.00×, 4 threads 1.50×" in text
