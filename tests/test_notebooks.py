"""The notebooks run top to bottom (nbclient) on tiny runs of every kind of search."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from segnas import pipeline
from tests.conftest import compose_config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run a notebook whose kernel inherits ``env``; errors fail the test with the cell's traceback."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )


def test_compare_notebook_reproduces_the_comparison(tiny_comparison, tmp_path: Path, monkeypatch) -> None:
    run_dir, _ = tiny_comparison
    notebook = execute("compare.ipynb", tmp_path, monkeypatch, SEGNAS_COMPARE_DIR=str(run_dir))
    text = outputs(notebook)
    assert "4 search runs" in text and "comparison.csv reproduced for 4 runs" in text
    assert "| autodeeplab | 2/2 |" in text
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2


@pytest.mark.parametrize("kind", ["autodeeplab", "random-autodeeplab"])
def test_walkthrough_notebook_on_autodeeplab_runs(kind: str, tiny_comparison, tmp_path: Path, monkeypatch) -> None:
    run_dir, _ = tiny_comparison
    text = outputs(
        execute(
            "search_walkthrough.ipynb", tmp_path, monkeypatch, SEGNAS_RUN_DIR=str(run_dir / "runs" / f"{kind}_seed0")
        )
    )
    assert f"search kind: {kind}" in text


def test_walkthrough_notebook_on_auxcell_and_fmas_runs(supernet_file: Path, tmp_path: Path, monkeypatch) -> None:
    small = {
        "auxcell": [
            "searcher=auxcell",
            "searcher.children=2",
            "searcher.stage1.num_crops=8",
            "searcher.stage1.batch_size=4",
            "searcher.stage1.epochs=1",
            "searcher.stage2.max_batches=1",
            "searcher.reward.holdout_min=4",
        ],
        "fmas": [
            "searcher=fmas",
            f"searcher.supernet={supernet_file}",
            "searcher.pop_size=4",
            "searcher.generations=2",
            "searcher.val_images=4",
            "searcher.calib_images=4",
            "searcher.top_k=1",
        ],
    }
    for kind, overrides in small.items():
        run = tmp_path / kind
        pipeline.run(compose_config("task=search", f"run_dir={run}", "retrain.epochs=1", *overrides))
        text = outputs(execute("search_walkthrough.ipynb", tmp_path, monkeypatch, SEGNAS_RUN_DIR=str(run)))
        assert f"search kind: {kind}" in text and "rows in search.csv" in text
