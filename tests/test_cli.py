"""The user's entry point as a subprocess: profile's JSON line, multirun, errors, unique run dirs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parent.parent


def segnas(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segnas.run", *args],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_profile_prints_one_json_line_last(tmp_path: Path) -> None:
    result = segnas(
        tmp_path,
        "task=profile",
        "arch=deeplabv3plus-mobilenetv2",
        "data.num_classes=21",
        "profile.input_size=[128,160]",
        "hardware.runs=2",
        "hardware.warmup=1",
        f"hydra.run.dir={tmp_path}/profile",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    cost = json.loads(last)
    assert cost["input_size"] == [128, 160] and cost["num_classes"] == 21
    assert cost["params"] > 1_000_000 and cost["macs"] > 0 and cost["latency_ms"] > 0
    assert cost["latency_estimated"] is False
    assert json.loads((tmp_path / "profile" / "profile.json").read_text()) == cost


def test_user_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = segnas(tmp_path, "task=train", "arch=nonexistent-net", f"hydra.run.dir={tmp_path}/bad")
    assert result.returncode == 2
    assert "segnas: error: arch=nonexistent-net" in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    args = [
        "-m",
        "segnas.run",
        "task=profile",
        "arch=deeplabv3plus-mobilenetv2",
        "profile.input_size=[32,32]",
        "hardware.runs=1",
        "hardware.warmup=0",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env=subprocess_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    summaries = list((tmp_path / "outputs").glob("*/*/summary.json"))
    assert len(summaries) == 2


def test_multirun_writes_one_run_directory_per_job(tmp_path: Path) -> None:
    from tests.conftest import TINY

    sweep = tmp_path / "sweep"
    result = segnas(
        tmp_path,
        "-m",
        *[o for o in TINY if not o.startswith("data.crop_size")],
        "task=train",
        "arch=deeplabv3plus-mobilenetv2",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "data.crop_size=32,48",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == ["0", "1"]
    sizes = [json.loads(p.read_text())["input_size"] for p in summaries]
    assert sizes == [[32, 32], [48, 48]]
