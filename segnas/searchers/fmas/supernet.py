"""The trained network FMAS searches inside: loaded from ``searcher.supernet`` or trained here.

A DeepLabV3+ checkpoint from ``task=train`` (space ``deeplabv3plus``) and one of the elastic space
are both accepted; either is re-labelled as the full genotype of the elastic space (the same
modules and weights). Without a checkpoint, ``searcher.supernet_arch`` is trained for
``searcher.supernet_epochs`` epochs on the run's data module with the run's training module and
Trainer (:class:`~segnas.searchers.contract.SearchContext`) into ``<run_dir>/supernet/``
(resumable there), and saved as ``<run_dir>/supernet/model.pt``.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from segnas import spaces
from segnas.errors import ConfigError
from segnas.genotype import Genotype
from segnas.offline_weights import describe
from segnas.searchers.contract import SearchContext
from segnas.searchers.fmas.settings import FMASSettings
from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace
from segnas.training import load_network
from segnas.training.checkpoint import network_facts, save_network

SUPERNET_SPACES = ("deeplabv3plus", "elastic-deeplabv3plus")


def as_elastic(genotype: Genotype, space: ElasticDeepLabV3PlusSpace, source: str) -> Genotype:
    """The full elastic genotype of a DeepLabV3+ genotype (refusing a sub-network or another space)."""
    if genotype.space not in SUPERNET_SPACES:
        raise ConfigError(
            f"{source}: a network of space '{genotype.space}' cannot be an FMAS supernet "
            f"(expected one of {', '.join(SUPERNET_SPACES)})"
        )
    arch = {k: v for k, v in genotype.arch.items() if k not in ("depths", "widths")}
    full = space.genotype(arch)
    if genotype.space == space.name and space.check(genotype).hash != full.hash:
        raise ConfigError(f"{source}: holds a sub-network ({genotype.hash}), not a full network")
    return full


def obtain(
    settings: FMASSettings, context: SearchContext, space: ElasticDeepLabV3PlusSpace, known: str | None = None
) -> tuple[Genotype, nn.Module, dict[str, Any]]:
    """(full genotype, trained network, facts for the summary).

    ``known`` is the supernet path a resumed search recorded; it wins over everything so that a
    resumed search slices the very weights it started with.
    """
    datamodule = context.datamodule
    path = known or settings.supernet
    own = context.run_dir / "supernet" / "model.pt"
    if path is None and own.is_file():
        path = str(own)
    if path is not None:
        genotype, num_classes, net = load_network(path)
        if num_classes != datamodule.num_classes:
            raise ConfigError(
                f"searcher.supernet={path} predicts {num_classes} classes but data.num_classes={datamodule.num_classes}"
            )
        # how the supernet was trained, when the file says (an FMAS run's supernet/model.pt does): a
        # search slicing another run's supernet (random-FMAS in task=compare, a resumed search, a
        # table) then reports the same supernet images as the run that trained it
        trained = {k: v for k, v in network_facts(path).items() if k != "supernet_trained_here"}
        return (
            as_elastic(genotype, space, f"searcher.supernet={path}"),
            net,
            {"supernet_images_seen": 0, **trained, "supernet": str(path), "supernet_trained_here": False},
        )
    return _train(settings, context, space)


def _train(
    settings: FMASSettings, context: SearchContext, space: ElasticDeepLabV3PlusSpace
) -> tuple[Genotype, nn.Module, dict[str, Any]]:
    epochs = settings.supernet_epochs  # >= 1 here: checked with the config
    genotype = as_elastic(
        spaces.resolve_arch(settings.supernet_arch), space, f"searcher.supernet_arch={settings.supernet_arch}"
    )
    datamodule = context.datamodule
    out_dir = context.run_dir / "supernet"
    out_dir.mkdir(parents=True, exist_ok=True)
    net = spaces.build(
        genotype, datamodule.num_classes, pretrained=context.pretrained, backbone_weights=context.backbone_weights
    )
    start = time.perf_counter()
    module = context.train_module(genotype, datamodule.num_classes, net)
    trainer = context.trainer(out_dir, datamodule=datamodule, max_epochs=epochs)
    resume = out_dir / "last.ckpt"
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume.is_file() else None)
    path = out_dir / "model.pt"
    facts = {
        "supernet": str(path),
        "supernet_trained_here": True,
        "supernet_epochs": epochs,
        "supernet_backbone_weights": describe(context.pretrained, context.backbone_weights, genotype.arch["backbone"]),
        "supernet_train_time_s": round(time.perf_counter() - start, 2),
        "supernet_images_seen": int(trainer.global_step) * datamodule.batch_size,
    }
    if trainer.is_global_zero:  # under trainer=ddp every rank holds the same weights; one writes them
        save_network(
            path, genotype, datamodule.num_classes, net.cpu(), facts={k: v for k, v in facts.items() if k != "supernet"}
        )
    return genotype, net, facts
