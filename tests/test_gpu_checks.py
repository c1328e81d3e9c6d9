"""The prepared device-machine script (benchmarks/gpu/checks.sh) and the wheels it installs there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


#: The steps of CHECKS_QUICK on the CPU, in order: the CLI end to end, then the benchmarks.
QUICK_STEPS = [
    "environment",
    "cli_autodeeplab",
    "cli_autodeeplab_fp32",
    "cli_auxcell",
    "cli_fmas",
    "cli_train_ddp",
    "cli_eval",
    "cli_profile",
    "cli_quantize",
    "cli_train_stopped",
    "cli_resume",
    "class_predictions",
    "supernet_64_fp32",
    "auxcell_children",
    "eval_protocol",
    "train_step",
]


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
    """CHECKS_QUICK on the CPU: every step exits 0 and leaves its JSON rows in $OUT; the CLI steps
    (trainer=cpu here) passed their run-directory checks, so the script cannot rot between GPU
    sessions (about 7 minutes on 2 cores)."""
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "CHECKS_DEVICE": "cpu",
        "CHECKS_QUICK": "1",
        "CHECKS_INSTALL": "0",
        "CHECKS_BUDGET_S": "1100",  # 2 shared cores: no step may be skipped for time here
        "PYTHON": sys.executable,
    }
    subprocess.run(["bash", str(GPU / "checks.sh")], check=True, env=env, cwd=ROOT, capture_output=True, timeout=1200)
    steps = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()[1:]]
    assert [name for name, _, _ in steps] == QUICK_STEPS
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
    assert [name for name, _, _ in steps] == QUICK_STEPS and all(rc == "skipped" for _, rc, _ in steps)
    assert (tmp_path / "rows.jsonl").read_text() == ""


def check_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GPU / "check_run.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def write_summary(run_dir: Path, **fields: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(fields))
    return run_dir


def test_the_run_check_fails_on_what_an_exit_status_hides(tmp_path: Path) -> None:
    """A NaN score (written as JSON NaN), a missing file, another genotype, a run that failed: each
    makes the step fail, where the CLI's exit status alone would have passed."""
    good = write_summary(tmp_path / "good", val_mIoU=0.5, genotype_hash="abc")
    nan = write_summary(tmp_path / "nan", val_mIoU=float("nan"), genotype_hash="abc")
    other = write_summary(tmp_path / "other", val_mIoU=0.5, genotype_hash="xyz")
    passed = check_run(str(good), "--finite", "val_mIoU", "--same-genotype-as", str(good))
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout.splitlines()[-1])["val_mIoU"] == 0.5
    assert "val_mIoU" in check_run(str(nan), "--finite", "val_mIoU").stderr
    assert check_run(str(good), "--files", "model.pt").returncode == 1
    assert "differs" in check_run(str(other), "--same-genotype-as", str(good)).stderr
    assert check_run(str(good), "--equals", "val_mIoU", "0.4").returncode == 1
    assert check_run(str(nan), "--close-to", str(good), "val_mIoU", "0.1").returncode == 1
    assert check_run(str(other), "--close-to", str(good), "val_mIoU", "0.1").returncode == 0
    failed = check_run(str(good), "--", sys.executable, "-c", "raise SystemExit(3)")
    assert failed.returncode == 1 and "exited non-zero" in failed.stderr


def test_the_run_check_runs_the_command_before_reading_its_run_dir(tmp_path: Path) -> None:
    write = f"import json, pathlib; pathlib.Path({str(tmp_path)!r}, 'summary.json').write_text(json.dumps({{'x': 1}}))"
    result = check_run(str(tmp_path), "--finite", "x", "--", sys.executable, "-c", write)
    assert result.returncode == 0, result.stderr
