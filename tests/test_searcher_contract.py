"""The searcher <-> pipeline contract (segnas/searchers/contract.py, docs/searchers.md): every
registered searcher keeps it, and a fourth searcher written by the documented steps (its folder,
one config file, one registry line: tests/tiny_searcher) runs through ``task=search`` with nothing
else changed."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segnas import pipeline
from segnas.searchers import registry
from segnas.searchers.contract import SearcherSettings
from segnas.settings import schema
from tests.conftest import CONFIG_DIR

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(registry.SEARCHERS))
def test_every_registered_searcher_keeps_the_contract(name: str) -> None:
    entry = registry.SEARCHERS[name]
    assert dataclasses.is_dataclass(entry.settings) and issubclass(entry.settings, SearcherSettings)
    assert entry.settings().name == name
    config = yaml.safe_load((Path(CONFIG_DIR) / "searcher" / f"{name}.yaml").read_text())
    assert config["defaults"][0] == {"/schema/searcher@_here_": name}, "the file extends its schema first"
    assert config["name"] == name
    parameters = list(inspect.signature(entry.search()).parameters.values())
    assert [p.name for p in parameters[:2]] == ["settings", "context"]
    assert all(p.default is not inspect.Parameter.empty for p in parameters[2:]), "extra arguments need defaults"


def test_the_registry_and_every_searchers_settings_import_without_torch(tmp_path: Path) -> None:
    """The config check reads them before torch loads (a mistake is reported within a second)."""
    code = (
        "import sys, segnas.searchers.registry as r\n"
        "assert r.SEARCHERS\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'pytorch_lightning', 'timm', 'pymoo', 'albumentations')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_fourth_searcher_takes_its_folder_one_config_file_and_one_registry_line(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tiny_searcher.settings import TinySettings

    monkeypatch.setitem(
        registry.SEARCHERS, "tiny", registry.Registration(TinySettings, "tests.tiny_searcher.searcher:search")
    )
    schema.register()
    import segnas.tasks.search as search_task

    built = []

    def counting(node, *args, **kwargs):
        made = instantiate(node, *args, **kwargs)
        built.append(type(made).__name__)
        return made

    instantiate = search_task.instantiate
    monkeypatch.setattr(search_task, "instantiate", counting)
    cfg = make_cfg(
        "task=search", "searcher=tiny", f"hydra.searchpath=[file://{TESTS / 'conf'}]", "trainer.max_epochs=1"
    )
    summary = pipeline.run(cfg)

    run_dir = tmp_path / "run"
    assert built.count("SyntheticDataModule") == 1, built  # the data module is built once per run
    assert summary["searcher"] == "tiny"
    assert summary["tiny_hook_calls"] == 1  # the hook after retraining, called once
    assert summary["tiny_retrained"] == [entry["genotype_hash"] for entry in summary["retrained"]]
    assert len(summary["retrained"]) == 2
    # the two candidates' params ascend: the searcher's ranking reached the pipeline
    assert summary["retrained"][0]["search_params"] <= summary["retrained"][1]["search_params"]
    # the val images the search scored on are left out of the report
    assert summary["val_images_reported"] == 8 - 2
    written = yaml.safe_load((run_dir / "genotype.yaml").read_text())
    assert written["hash"] == summary["genotype_hash"]
    assert json.loads((run_dir / "summary.json").read_text())["searcher"] == "tiny"
