"""searcher=autodeeplab: the bilevel steps touch only their own parameters, the search writes its
records and a retrained network, resume replays exactly, and α/β agree across DDP ranks."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from segnas import pipeline, spaces
from segnas.data import SyntheticDataModule
from segnas.searchers.autodeeplab.module import AutoDeepLabSearchModule
from segnas.searchers.autodeeplab.records import ArchitectureLog
from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.engine import STATE_KEY
from segnas.spaces.autodeeplab.decode import normalise_beta, num_edges
from segnas.spaces.autodeeplab.supernet import BlockEdges
from segnas.training import load_network

SMALL = [
    "task=search",
    "searcher=autodeeplab",
    "searcher.layers=3",
    "searcher.filter_multiplier=2",
    "searcher.blocks=2",
    "searcher.aspp_channels=8",
    "searcher.epochs=2",
    "searcher.warmup_epochs=1",
    "searcher.val_images=4",
    "searcher.batches_per_epoch=null",
    "searcher.network.filter_multiplier=2",
    "searcher.network.aspp_channels=8",
    "searcher.network.decoder_channels=8",
    "searcher.network.low_level_channels=4",
    "retrain.epochs=1",
]


def _snapshot(module: AutoDeepLabSearchModule) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    net = module.supernet
    return ([p.detach().clone() for p in net.arch_parameters()], [p.detach().clone() for p in net.weight_parameters()])


class _StepRecorder(pl.Callback):
    """Parameters right before each optimiser step and at the end of the batch."""

    def __init__(self) -> None:
        self.before: list[tuple[str, tuple]] = []
        self.after: list[tuple] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        name = "weights" if optimizer is trainer.optimizers[0] else "arch"
        self.before.append((name, _snapshot(module)))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after.append(_snapshot(module))


def _module(num_classes: int = 5, warmup: int = 0) -> AutoDeepLabSearchModule:
    torch.manual_seed(0)
    settings = AutoDeepLabSettings(
        layers=2,
        filter_multiplier=2,
        blocks=2,
        aspp_channels=4,
        warmup_epochs=warmup,
        weight_optimizer={
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 3e-4,
        },
        arch_optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1, "weight_decay": 1e-3},
    )
    return AutoDeepLabSearchModule(settings, num_classes)


def _loaders(batch_size: int = 2) -> dict[str, DataLoader]:
    data = SyntheticDataModule(crop_size=32, train_size=8, val_size=4, batch_size=batch_size, num_classes=5)
    data.setup("fit")
    half_a, half_b = data.train_halves()
    return {
        "a": DataLoader(half_a, batch_size=batch_size, drop_last=True),
        "b": DataLoader(half_b, batch_size=batch_size, drop_last=True),
    }


def _equal(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(xs, ys))


def test_weight_step_moves_only_weights_and_arch_step_moves_only_alpha_beta(tmp_path: Path):
    module, recorder = _module(), _StepRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=_loaders())
    assert [name for name, _ in recorder.before] == ["weights", "arch", "weights", "arch"]
    for batch in range(2):
        (_, (arch0, weights0)), (_, (arch1, weights1)) = recorder.before[2 * batch : 2 * batch + 2]
        arch2, weights2 = recorder.after[batch]
        assert _equal(arch0, arch1), "the weight step changed alpha/beta"
        assert not _equal(weights0, weights1), "the weight step did not change the weights"
        assert _equal(weights1, weights2), "the architecture step changed the weights"
        assert not _equal(arch1, arch2), "the architecture step did not change alpha/beta"


def test_warmup_epochs_take_no_architecture_step(tmp_path: Path):
    module, recorder = _module(warmup=1), _StepRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    alpha = module.supernet.alpha.detach().clone()
    trainer.fit(module, train_dataloaders=_loaders())
    assert [name for name, _ in recorder.before] == ["weights", "weights"]
    assert torch.equal(module.supernet.alpha, alpha)


def test_search_writes_records_and_retrains_the_decoded_network(make_cfg, tmp_path: Path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="segnas"):
        summary = pipeline.run(make_cfg(*SMALL))
    run = tmp_path / "run"
    printed = capsys.readouterr().out
    for name, path in (
        ("genotype", run / "genotype.yaml"),
        ("model", run / "model.pt"),
        ("summary", run / "summary.json"),
    ):
        assert f"{name:>8}: {path}" in printed
    genotype = spaces.resolve_arch(str(run / "genotype.yaml"))
    assert genotype.space == "autodeeplab" and len(genotype.arch["path"]) == 3
    assert len(genotype.arch["cell"]) == 2 and genotype.arch["filter_multiplier"] == 2
    # the final genotype is the last epoch's decoding
    assert spaces.resolve_arch(str(run / "genotypes" / "epoch_001.yaml")) == genotype
    rows = list(csv.DictReader((run / "search.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert [row["arch_active"] for row in rows] == ["False", "True"]
    assert rows[-1]["genotype_hash"] == genotype.hash
    # one line per architecture epoch in the run's log
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("architecture epoch")]
    assert len(logged) == 2
    assert re.fullmatch(
        r"architecture epoch 1/2 \(warm-up\): weight loss \d+\.\d{4}, arch loss n/a, "
        r"supernet val mIoU \d\.\d{4}, path \d+( \d+){2}, genotype \w+",
        logged[0],
    ), logged[0]
    assert re.fullmatch(
        r"architecture epoch 2/2 \(architecture steps\): weight loss \d+\.\d{4}, arch loss \d+\.\d{4}, "
        rf"supernet val mIoU \d\.\d{{4}}, path {' '.join(map(str, genotype.arch['path']))}, "
        rf"genotype {genotype.hash}",
        logged[1],
    ), logged[1]
    params = json.loads((run / "arch_params.json").read_text())
    assert torch.tensor(params["alpha"]).shape == (num_edges(2), 8)
    beta = torch.tensor(params["beta"])
    assert torch.allclose(torch.tensor(params["beta_normalised"]), normalise_beta(beta))
    assert torch.allclose(torch.tensor(params["alpha_softmax"]).sum(1), torch.ones(num_edges(2)))
    for epoch in (0, 1):
        assert (run / "arch" / f"epoch_{epoch:03d}_alpha.png").stat().st_size > 0
        assert (run / "arch" / f"epoch_{epoch:03d}_beta.png").stat().st_size > 0
    # 8 images per half, batch 4: 2 weight steps per epoch, 2 architecture steps after warm-up
    assert summary["search_weight_steps"] == 4 and summary["search_arch_steps"] == 2
    assert summary["search_images_seen"] == 24
    assert summary["genotype_hash"] == genotype.hash and 0.0 <= summary["val_mIoU"] <= 1.0
    loaded_genotype, classes, _ = load_network(run / "model.pt")
    assert loaded_genotype == genotype and classes == 5
    assert (run / "model.onnx").is_file() and (run / "last.ckpt").is_file()
    # the engine's checkpoint, the search's one: its step counts under the engine's key
    state = torch.load(run / "last.ckpt", weights_only=False)[STATE_KEY]
    assert state["search"] == {"weight_steps": 4, "arch_steps": 2} and state["progress"]["images_seen"] == 24
    assert not list(run.rglob("epoch=*.ckpt")), "Lightning's default checkpoint saved the supernet too"
    assert Path(summary["retrained"][0]["retrain_dir"]).is_dir()


def test_resume_continues_exactly(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    overrides = [*SMALL, "searcher.warmup_epochs=0", "retrain.epochs=0"]
    pipeline.run(make_cfg(*overrides, run_dir=tmp_path / "straight"))

    def crash(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(ArchitectureLog, "on_train_epoch_start", crash, raising=False)
        with pytest.raises(RuntimeError, match="simulated crash"):
            pipeline.run(make_cfg(*overrides, run_dir=tmp_path / "crashed"))
    pipeline.run(make_cfg(*overrides, f"resume={tmp_path / 'crashed' / 'last.ckpt'}", run_dir=tmp_path / "resumed"))

    straight = json.loads((tmp_path / "straight" / "arch_params.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "arch_params.json").read_text())
    for key in ("alpha", "beta"):  # bitwise: the resumed search is the uninterrupted one
        assert straight[key] == resumed[key], key
    assert (tmp_path / "resumed" / "genotype.yaml").read_text() == (tmp_path / "straight" / "genotype.yaml").read_text()


def test_resuming_a_finished_search_reports_its_steps(make_cfg, tmp_path: Path):
    """Lightning runs no batch when the checkpoint is already at the last epoch; the step counts
    come back from the checkpoint instead."""
    overrides = [*SMALL, "retrain.epochs=0"]
    first = pipeline.run(make_cfg(*overrides, run_dir=tmp_path / "first"))
    again = pipeline.run(make_cfg(*overrides, f"resume={tmp_path / 'first' / 'last.ckpt'}", run_dir=tmp_path / "again"))
    assert first["search_steps"] > 0
    for key in ("search_steps", "search_weight_steps", "search_arch_steps", "search_images_seen"):
        assert again[key] == first[key], key
    assert (tmp_path / "again" / "genotype.yaml").read_text() == (tmp_path / "first" / "genotype.yaml").read_text()


class _GatherArch(pl.Callback):
    """Every rank's α and β at the end of training, saved by rank 0."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        flat = torch.cat([p.detach().flatten() for p in module.supernet.arch_parameters()])
        gathered = module.all_gather(flat)
        if trainer.is_global_zero:
            torch.save(gathered.cpu(), self.path)


def test_alpha_beta_stay_identical_across_two_ddp_spawn_processes(tmp_path: Path):
    """Also: the 3×3 atrous kernels' zero ring stays zero in spawned ranks (a constraint kept by
    a tensor hook would not be pickled into them)."""
    module = _module()
    initial = torch.cat([p.detach().flatten() for p in module.supernet.arch_parameters()])
    out = tmp_path / "arch.pt"
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[_GatherArch(str(out))],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=_loaders())
    gathered = torch.load(out)
    assert gathered.shape[0] == 2
    assert torch.equal(gathered[0], gathered[1])
    assert not torch.allclose(gathered[0], initial)  # architecture steps did run
    blocks = [m for m in module.supernet.modules() if isinstance(m, BlockEdges)]  # rank 0's trained weights
    assert blocks
    for block in blocks:
        ring = block.atrous.detach().view(block.edges, 2, block.mixed, block.mixed, 5, 5)[:, 0].clone()
        ring[..., 1:4, 1:4] = 0
        assert ring.abs().max() == 0


def test_search_on_a_voc_folder_logs_alpha_beta_to_wandb(make_cfg, tmp_path: Path):
    from tests.conftest import TINY, write_voc_layout

    root = write_voc_layout(tmp_path / "VOC2012", num_classes=3, train=8, val=4)
    tiny = [o for o in TINY if not o.startswith(("data", "logger"))]
    summary = pipeline.run(
        make_cfg(
            *tiny,
            *SMALL,
            "data=voc",
            f"data.root={root}",
            "data.num_classes=3",
            "data.crop_size=32",
            "data.batch_size=2",
            "data.num_workers=0",
            "logger=wandb",
            tiny=False,
        )
    )
    assert summary["data"] == "voc" and summary["num_classes"] == 3
    run = next((tmp_path / "run" / "wandb").glob("offline-run-*"))
    media = {path.name.split("_")[0] for path in run.rglob("media/images/search/*.png")}
    assert media >= {"alpha", "beta"}, "α / β pictures were not logged to W&B"
    assert list(run.rglob("media/table/search/genotypes*.json")), "the genotype table was not logged"


def test_presets_and_found_genotypes_train_and_profile(make_cfg, tmp_path: Path):
    profile = pipeline.run(
        make_cfg(
            "task=profile",
            "arch=autodeeplab-s",
            "data.num_classes=19",
            "profile.input_size=[64,64]",
            run_dir=tmp_path / "profile",
        )
    )
    assert profile["params"] == 10147427  # Table 2: 10.15M
    genotype = spaces.get_space("autodeeplab").genotype(
        {
            "cell": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["atrous_conv_5x5", 2], ["max_pool_3x3", 0]]],
            "path": [8, 4],
            "filter_multiplier": 2,
            "aspp_channels": 8,
            "decoder_channels": 8,
            "low_level_channels": 4,
        }
    )
    path = genotype.save(tmp_path / "found.yaml")
    trained = pipeline.run(make_cfg("task=train", f"arch={path}", run_dir=tmp_path / "train"))
    assert trained["genotype_hash"] == genotype.hash and trained["steps"] == 4
