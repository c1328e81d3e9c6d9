"""How long torch's OpenMP threads spin before they sleep, which ``import segnas`` sets before
torch loads libgomp (BENCHMARKS.md, "OpenMP wait policy"): a bounded spin, not a passive wait,
and never over the user's own setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = (
    "import json, os, sys; import segnas; "
    "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')} "
    "| {'torch_loaded': 'torch' in sys.modules}))"
)


def _after_import(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_import_sets_a_bounded_spin_before_torch_loads() -> None:
    # a passive wait (every parallel region wakes a sleeping thread) made the main job's
    # training steps 2x slower on 2 idle cores; libgomp's own 300,000 spins stall for ~30 ms
    # whenever another process wants the cores
    seen = _after_import()
    assert seen == {"GOMP_SPINCOUNT": "3000", "OMP_WAIT_POLICY": None, "torch_loaded": False}


@pytest.mark.parametrize(
    "env",
    [
        {"OMP_WAIT_POLICY": "PASSIVE"},
        {"OMP_WAIT_POLICY": "ACTIVE"},
        {"GOMP_SPINCOUNT": "INFINITE"},
        {"GOMP_SPINCOUNT": "0"},
    ],
)
def test_the_users_own_wait_setting_wins(env: dict[str, str]) -> None:
    seen = _after_import(**env)
    # the user's key as they set it, and nothing added beside it
    assert {k: seen[k] for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} == {
        "GOMP_SPINCOUNT": env.get("GOMP_SPINCOUNT"),
        "OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY"),
    }
