"""Asserts what a CLI step of benchmarks/gpu/checks.sh must leave behind, beyond its exit status.

A run that exits 0 can still have written NaN scores (bf16 overflow), no int8 fields (a quantize
step that was skipped) or a network whose activations vanished under SyncBatchNorm: each check
here reads the run directory and fails loudly, then prints one JSON line for rows.jsonl.

    python benchmarks/gpu/check_run.py RUN_DIR [--files F ...] [--finite K ...] [--same-genotype-as DIR]
        [--close-to DIR KEY TOL] [--equals KEY VALUE] [--summary NAME] [--syncbn] [--device cuda] [-- COMMAND ...]

With ``-- COMMAND ...`` the command (the CLI run that writes RUN_DIR) runs first and must exit 0:
one step of the device script is one command, so the run and its checks share its timeout.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def fail(message: str) -> None:
    """Exit non-zero with the reason on stderr, so the step's rc in steps.tsv says it failed."""
    print(f"check failed: {message}", file=sys.stderr)
    sys.exit(1)


def read_summary(run_dir: Path, name: str = "summary.json") -> dict[str, Any]:
    path = run_dir / name
    if not path.is_file():
        fail(f"{path} was not written")
    return json.loads(path.read_text())


def check_files(run_dir: Path, names: list[str]) -> None:
    """Every named file exists and is not empty (an ONNX export that died half way leaves 0 bytes)."""
    for name in names:
        path = run_dir / name
        if not path.is_file() or path.stat().st_size == 0:
            fail(f"{path} is missing or empty")


def check_finite(summary: dict[str, Any], keys: list[str]) -> None:
    """Each key is present and a finite number: a bf16 overflow or a metric state on the wrong
    device shows up as NaN, inf or a missing field, not as a crash."""
    for key in keys:
        value = summary.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            fail(f"{key} = {value!r} is not a finite number")


def genotype_hash(run_dir: Path) -> str:
    return str(read_summary(run_dir).get("genotype_hash"))


def check_same_genotype(run_dir: Path, other: Path) -> None:
    """The run found what a run of the same command on the CPU found (deterministic searches only)."""
    mine, theirs = genotype_hash(run_dir), genotype_hash(other)
    if mine != theirs:
        fail(f"genotype {mine} differs from {theirs} found by {other}")


def check_close(summary: dict[str, Any], other: Path, key: str, tol: float) -> None:
    """The same weights scored again (task=eval on a train run) give the same score."""
    theirs, mine = read_summary(other).get(key), summary.get(key)
    numbers = isinstance(theirs, (int, float)) and isinstance(mine, (int, float))
    if not numbers or not abs(mine - theirs) <= tol:  # NaN compares false: it fails too
        fail(f"{key} = {mine!r}, {other} has {theirs!r} (tolerance {tol})")


def check_equals(summary: dict[str, Any], key: str, value: str) -> None:
    if str(summary.get(key)) != value:
        fail(f"{key} = {summary.get(key)!r}, expected {value}")


def syncbn_outputs(run_dir: Path, device: str) -> dict[str, float]:
    """Eval output of the trained network, of it converted by segnas's timm-safe SyncBatchNorm
    plugin (what trainer=ddp trains) and of it converted by torch's own conversion, on one input.

    The first two must agree: the conversion keeps timm's BatchNormAct2d activations. torch's
    conversion drops them where the network has any, which shows the check can fail."""
    from segnas.training import load_network
    from segnas.training.layer_sync import TimmSyncBatchNorm

    _, _, net = load_network(run_dir / "model.pt")
    net = net.to(device).eval()
    synced = TimmSyncBatchNorm().apply(copy.deepcopy(net)).eval()
    torch_synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(net)).eval()
    converted = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    if converted == 0:
        fail("the network has no BatchNorm for SyncBatchNorm to convert: the check would prove nothing")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        plain, timm_safe, naive = net(x), synced(x), torch_synced(x)
    return {
        "syncbn_layers": converted,
        "syncbn_max_abs_diff": (plain - timm_safe).abs().max().item(),
        "torch_conversion_max_abs_diff": (plain - naive).abs().max().item(),
    }


def check_syncbn(run_dir: Path, device: str) -> dict[str, float]:
    result = syncbn_outputs(run_dir, device)
    if not result["syncbn_max_abs_diff"] <= 1e-5:
        fail(f"SyncBatchNorm changed the eval output: {result}")
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--summary", default="summary.json", help="the JSON file whose keys are checked")
    parser.add_argument("--files", nargs="*", default=[])
    parser.add_argument("--finite", nargs="*", default=[])
    parser.add_argument("--same-genotype-as", type=Path)
    parser.add_argument("--close-to", nargs=3, metavar=("DIR", "KEY", "TOL"))
    parser.add_argument("--equals", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--syncbn", action="store_true", help="compare the SyncBatchNorm-converted network")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def run_first(command: list[str]) -> None:
    """The run whose directory is checked; its output goes to the step's log as it comes."""
    if command and subprocess.run(command).returncode != 0:
        fail(f"the run exited non-zero: {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parse(argv[:split])
    run_first(argv[split + 1 :])
    check_files(args.run_dir, [args.summary, *args.files])
    summary = read_summary(args.run_dir, args.summary)
    check_finite(summary, args.finite)
    for key, value in args.equals:
        check_equals(summary, key, value)
    row: dict[str, Any] = {"run_dir": str(args.run_dir), **{key: summary[key] for key in args.finite}}
    if args.same_genotype_as:
        check_same_genotype(args.run_dir, args.same_genotype_as)
        row["same_genotype_as"] = str(args.same_genotype_as)
    if args.close_to:
        other, key, tol = args.close_to
        check_close(summary, Path(other), key, float(tol))
    if args.syncbn:
        row.update(check_syncbn(args.run_dir, args.device))
    row["genotype_hash"] = summary.get("genotype_hash")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
