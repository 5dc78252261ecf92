"""The statistics benchmarks/throughput.py prints: the spread of repeats, the pair's ratio, the peak RSS."""

from __future__ import annotations

import mmap
import sys

import pytest

from benchmarks.common import spread
from benchmarks.throughput import _status_bytes, add_ratio, reset_peak_rss


def test_spread_is_min_median_max_and_max_over_min_minus_one():
    assert spread([3.0, 1.0, 2.0, 4.0]) == {"min": 1.0, "median": 2.5, "max": 4.0, "spread": 3.0}
    assert spread([2.0, 2.0, 2.0])["spread"] == 0
    for bad in ([], [1.0, 0.0]):
        with pytest.raises(ValueError, match="positive"):
            spread(bad)


def test_ratio_is_of_the_median_rates_and_its_range_pairs_each_round():
    rows = [{"impl": "suite"}, {"impl": "ref"}]
    # seconds per step, round by round: the suite 2x faster in round 1, equal in round 2, 4x in round 3
    add_ratio(rows, suite=[1.0, 2.0, 1.0], ref=[2.0, 2.0, 4.0])
    assert rows[0]["suite / ref"] == 2.0  # median ref seconds 2.0 / median suite seconds 1.0
    assert rows[0]["ratio range"] == "1.000-4.000"
    assert "suite / ref" not in rows[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs is Linux's")
def test_peak_rss_after_a_reset_counts_what_came_after_it():
    # anonymous mappings, not bytearrays: a bytearray may reuse heap pages that are resident already (after the
    # rest of the suite has run), and then adds nothing to the RSS
    def touched(size: int) -> mmap.mmap:
        m = mmap.mmap(-1, size)
        m[::4096] = b"\1" * len(range(0, size, 4096))
        return m

    big = touched(64 * 2**20)  # resident, then freed
    big.close()
    base = reset_peak_rss()
    assert _status_bytes("VmHWM") < base + 32 * 2**20  # the freed 64 MiB no longer count
    more = touched(48 * 2**20)
    assert _status_bytes("VmHWM") - base >= 40 * 2**20
    more.close()
