"""The prepared device-machine script (benchmarks/gpu/checks.sh) and the wheels it installs there."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


def pins() -> dict[str, str]:
    lines = (GPU / "wheels.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


def test_every_pinned_wheel_is_a_package_this_environment_runs() -> None:
    """wheels.txt names packages the tests ran with (a name dropped from the install is named).
    A version that drifted from the pin (a newer release resolved by a fresh install) is a
    warning, not a failure: CI must not turn red on a registry's release day, but whoever
    refreshes the wheels should see it."""
    absent, drifted = [], {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
            continue
        if installed != version:
            drifted[name] = (version, installed)
    assert not absent, f"benchmarks/gpu/wheels.txt names packages not installed here: {absent}"
    if drifted:
        warnings.warn(f"benchmarks/gpu/wheels.txt pins (pinned, installed) differ: {drifted}", stacklevel=1)


def test_every_install_requirement_the_image_lacks_is_pinned() -> None:
    """segnas's own requirements that the device image does not hold are in wheels.txt (wandb is
    left out on purpose: imported only for logger=wandb)."""
    image = {
        "torch",
        "torchvision",
        "pytorch-lightning",
        "torchmetrics",
        "timm",
        "matplotlib",
        "pillow",
        "numpy",
        "pyyaml",
        "scipy",
        "scikit-learn",
    }
    required = {
        req.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for req in metadata.requires("segnas") or []
        if "extra ==" not in req
    }
    missing = required - image - {"wandb"} - {name.lower() for name in pins()}
    assert not missing, f"add to benchmarks/gpu/wheels.txt: {sorted(missing)}"


@pytest.mark.parametrize("script", ["checks.sh", "wheels.sh"])
def test_the_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(GPU / script)], check=True)


@pytest.mark.slow
def test_the_checks_run_end_to_end_on_tiny_settings(tmp_path: Path) -> None:
    """CHECKS_QUICK on the CPU: every step exits 0 and leaves its JSON rows in $OUT."""
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "CHECKS_DEVICE": "cpu",
        "CHECKS_QUICK": "1",
        "CHECKS_INSTALL": "0",
        "PYTHON": sys.executable,
    }
    subprocess.run(["bash", str(GPU / "checks.sh")], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    steps = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()[1:]]
    assert [name for name, _, _ in steps] == [
        "environment",
        "class_predictions",
        "supernet_64_fp32",
        "auxcell_children",
        "eval_protocol",
        "train_step",
    ]
    assert all(rc == "0" for _, rc, _ in steps), steps
    rows = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert {line.split('"step": "')[1].split('"')[0] for line in rows} == {name for name, _, _ in steps}


def test_steps_past_the_budget_are_skipped_and_recorded(tmp_path: Path) -> None:
    """The script ends inside the device call's timeout: with no budget left every step is
    recorded as skipped, none runs."""
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "CHECKS_DEVICE": "cpu",
        "CHECKS_QUICK": "1",
        "CHECKS_INSTALL": "0",
        "CHECKS_BUDGET_S": "0",
        "PYTHON": sys.executable,
    }
    subprocess.run(["bash", str(GPU / "checks.sh")], check=True, env=env, cwd=ROOT, capture_output=True, timeout=60)
    steps = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()[1:]]
    assert len(steps) == 6 and all(rc == "skipped" for _, rc, _ in steps)
    assert (tmp_path / "rows.jsonl").read_text() == ""
