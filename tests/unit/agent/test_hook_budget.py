"""The hook's second counts from its process's start (agent/hooks.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from claudemesh.agent.hooks import BUDGET_FLOOR_S, BUDGET_S, time_left


def test_what_is_left_of_the_budget() -> None:
    assert time_left(None) == BUDGET_S  # start unknown: the whole budget
    assert time_left(0.3) == pytest.approx(BUDGET_S - 0.3)
    assert time_left(BUDGET_S + 5) == BUDGET_FLOOR_S  # a slow start still gets a quick try


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/stat")
def test_a_new_process_reads_its_own_start() -> None:
    code = ("import time; time.sleep(0.3); from claudemesh.agent.hooks import startup_s;"
            " print(startup_s())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    assert out != "None"
    # the 0.3 s it slept before asking are counted (start time has 10 ms ticks)
    assert 0.25 <= float(out) < 10.0, out
