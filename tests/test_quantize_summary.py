"""Issue 28, item 3: every retrained winner (task=search) and every trained network (task=train,
the hand-designed baselines) is quantized to int8 into ``<run_dir>/int8/`` and reports its int8
mIoU and latency in summary.json; task=compare tabulates and pairs them."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from segnas import pipeline
from segnas.hardware.gap8 import Gap8Latency
from segnas.quantize.deploy import REPORT_FILE, summary_fields
from segnas.report import statistics
from segnas.report.comparison import COLUMNS, markdown, write_csv
from segnas.settings.run import QuantizeSettings
from segnas.tasks import deployment
from segnas.tasks.summary import final_metrics
from tests.conftest import TINY_ADL, compose_config

#: On: TINY turns it off for the other tests. 8 calibration images: TINY's train split has 16.
INT8 = ["quantize.in_summary=true", "quantize.calib_images=8"]


def search_cfg(run_dir: Path, *overrides: str):
    tiny_search = [f"searcher.{o.removeprefix('searcher.')}" for o in TINY_ADL]
    return compose_config(f"run_dir={run_dir}", "searcher=autodeeplab", *tiny_search, "retrain.epochs=1", *overrides)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny Auto-DeepLab search whose retrained winner is quantized (input_size null: the val
    images' own size, so both ONNX files see every image as the PyTorch evaluator does)."""
    run_dir = tmp_path_factory.mktemp("int8") / "search"
    return run_dir, pipeline.run(search_cfg(run_dir, *INT8))


@pytest.fixture(scope="module")
def trained(searched, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The search's winner trained as task=train (as compare's hand-designed baselines are)."""
    run_dir = tmp_path_factory.mktemp("int8") / "train"
    arch = f"arch={searched[0] / 'genotype.yaml'}"
    return run_dir, pipeline.run(compose_config(f"run_dir={run_dir}", "task=train", arch, *INT8))


def test_search_summary_holds_the_int8_fields_of_its_quantize_json(searched) -> None:
    run_dir, summary = searched
    report = json.loads((run_dir / "int8" / REPORT_FILE).read_text())
    written = json.loads((run_dir / "summary.json").read_text())
    fields = summary_fields(report)
    assert {key: written[key] for key in fields} == fields and "int8_error" not in written
    assert Path(written["int8_model_onnx"]) == run_dir / "int8" / "model.int8.onnx"
    assert Path(written["int8_model_onnx"]).is_file() and written["int8_input_size"] == [32, 32]
    assert final_metrics(summary)["int8/miou"] == pytest.approx(written["int8_miou"])
    assert final_metrics(summary)["int8/latency_ms"] == pytest.approx(written["int8_latency_ms"])


def test_the_float32_onnx_scores_the_winner_as_the_run_did(searched) -> None:
    """Same val images at their own size, one whole-image evaluator: the float32 ONNX file of
    model.pt scores what the retrained network scored in PyTorch, class by class (to a pixel or
    two: the export agrees with PyTorch within a tolerance, which can tip a near tie)."""
    run_dir, summary = searched
    report = json.loads((run_dir / "int8" / REPORT_FILE).read_text())
    assert summary["int8_float32_onnx_miou"] == pytest.approx(summary["val_mIoU"], abs=1e-4)
    assert report["scores"]["images"] == 8  # TINY's data.val_size: all of val, as the run scored
    per_class = {name: round(iou["float32"], 4) for name, iou in report["scores"]["per_class_iou"].items()}
    assert per_class == summary["val_per_class_iou"]


def test_train_summary_holds_the_int8_fields(trained) -> None:
    run_dir, summary = trained
    report = json.loads((run_dir / "int8" / REPORT_FILE).read_text())
    assert summary["task"] == "train" and summary["int8_miou"] == report["miou_int8"]
    assert summary["int8_float32_onnx_miou"] == pytest.approx(summary["val_mIoU"], abs=1e-4)


def test_a_failed_quantization_keeps_the_float_summary(
    searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernel for this op\n(a long traceback-like tail)")

    monkeypatch.setattr(deployment, "quantize_network", broken)
    arch = f"arch={searched[0] / 'genotype.yaml'}"
    with caplog.at_level(logging.ERROR, logger="segnas.tasks.deployment"):
        summary = pipeline.run(compose_config(f"run_dir={tmp_path / 'run'}", "task=train", arch, *INT8))
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["int8_error"] == "RuntimeError: no int8 kernel for this op"
    assert written["val_mIoU"] >= 0 and Path(written["model"]).is_file() and written["params"] > 0
    assert not any(key in written for key in ("int8_miou", "int8_latency_ms"))
    lines = [r.getMessage() for r in caplog.records if r.name == "segnas.tasks.deployment"]
    assert len(lines) == 1 and "\n" not in lines[0] and "float results stand" in lines[0]


def test_nothing_to_quantize_is_said_not_failed(tmp_path: Path) -> None:
    """retrain.epochs=0 leaves no model.pt; depth networks are not scored in int8; off is off."""
    args = (None, QuantizeSettings(), Gap8Latency(), tmp_path)
    assert "retrain.epochs=0" in deployment.int8_summary(None, *args)["int8_skipped"]
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    assert "task_type=depth" in deployment.int8_summary(str(model), *args, task_type="depth")["int8_skipped"]
    assert deployment.int8_summary(str(model), None, QuantizeSettings(in_summary=False), Gap8Latency(), tmp_path) == {}
    assert not list(tmp_path.glob("*.onnx"))


def test_compare_gathers_the_int8_columns_and_pairs_them(searched, trained, tmp_path: Path) -> None:
    runs = ",".join(str(run_dir) for run_dir, _ in (searched, trained))
    pipeline.run(compose_config("task=compare", f"run_dir={tmp_path / 'cmp'}", f"compare.gather=[{runs}]"))
    with (tmp_path / "cmp" / "comparison.csv").open() as handle:
        rows = {row["label"]: row for row in csv.DictReader(handle)}
    assert {"int8_miou", "int8_latency_ms", "int8_latency_ratio", "int8_error"} <= set(COLUMNS)
    for label, (_, summary) in zip(("autodeeplab", f"baseline-{searched[0] / 'genotype.yaml'}"), (searched, trained)):
        assert float(rows[label]["int8_miou"]) == pytest.approx(summary["int8_miou"])
        assert float(rows[label]["int8_latency_ms"]) == pytest.approx(summary["int8_latency_ms"])
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| int8 mIoU | int8 latency (ms) |" in text
    for heading in ("Int8 val mIoU of the retrained winner", "Int8 latency of the retrained winner"):
        section = text.split(heading)[1].split("\n\n")[1]
        assert section.startswith("- autodeeplab − baseline-") and "over 1 paired seed" in section


def test_int8_paired_statistics_match_a_hand_computation(tmp_path: Path) -> None:
    int8 = {"fmas": [0.48, 0.51, 0.47, 0.50], "random-fmas": [0.45, 0.46, 0.46, 0.44]}
    latency = {"fmas": [3.1, 2.9, 3.3, 3.0], "random-fmas": [3.6, 3.8, 3.2, 3.9]}
    rows = [
        {
            "label": label,
            "seed": seed,
            "status": "ok",
            "val_mIoU": 0.5,
            "params": 1,
            "macs": 1,
            "latency_ms": 1.0,
            "search_wall_time_s": 1.0,
            "search_images_seen": 1,
            "run_dir": f"/x/{label}{seed}",
            "latency_estimated": False,
            "int8_miou": int8[label][seed],
            "int8_latency_ms": latency[label][seed],
        }
        for label in int8
        for seed in range(4)
    ]
    text = markdown(rows, "python -m segnas.run task=compare")
    differences = np.subtract(int8["fmas"], int8["random-fmas"])  # 0.03, 0.05, 0.01, 0.06
    miou_line = text.split("Int8 val mIoU of the retrained winner")[1].split("\n\n")[1]
    p = stats.wilcoxon(differences).pvalue  # all four positive: 2 / 2^4
    assert p == pytest.approx(0.125)
    assert miou_line.startswith(f"- fmas − random-fmas: {differences.mean():+.4f} over 4 paired seeds")
    assert f"Wilcoxon p = {p:.3g}" in miou_line
    relative = 100 * (np.mean(int8["fmas"]) - np.mean(int8["random-fmas"])) / np.mean(int8["random-fmas"])
    assert f"relative improvement {relative:+.1f} %" in miou_line
    faster = np.subtract(latency["fmas"], latency["random-fmas"])
    latency_line = text.split("Int8 latency of the retrained winner")[1].split("\n\n")[1]
    assert latency_line.startswith(f"- fmas − random-fmas: {faster.mean():+.2f} over 4 paired seeds")
    low, high = statistics.bootstrap_ci(faster)
    assert f"CI {low:+.2f} … {high:+.2f}" in latency_line
    header = next(line for line in text.splitlines() if line.startswith("| searcher | runs |"))
    assert header.endswith("| int8 mIoU | int8 latency (ms) |")
    fmas = next(line for line in text.splitlines() if line.startswith("| fmas | 4/4 |"))
    assert f"{np.mean(int8['fmas']):.4f} ± {np.std(int8['fmas'], ddof=1):.4f}" in fmas
    write_csv(tmp_path / "comparison.csv", rows)
    with (tmp_path / "comparison.csv").open() as handle:
        assert [float(r["int8_miou"]) for r in csv.DictReader(handle)] == int8["fmas"] + int8["random-fmas"]
