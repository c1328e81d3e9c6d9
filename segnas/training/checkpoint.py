"""Rebuild a trained network from what a run left behind, without its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segnas import spaces
from segnas.errors import ConfigError
from segnas.genotype import Genotype


def load_network(path: str | Path) -> tuple[Genotype, int, nn.Module]:
    """Genotype, class count and network with trained weights, from a ``.ckpt`` or ``model.pt``.

    A run directory is accepted too and means its ``last.ckpt``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"checkpoint={path}: no such file (expected a .ckpt, model.pt or run dir)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"checkpoint={path}: cannot be read as a torch checkpoint ({err})") from err
    if "hyper_parameters" in payload:
        hparams = payload["hyper_parameters"]
        state = {k.removeprefix("net."): v for k, v in payload["state_dict"].items() if k.startswith("net.")}
    elif "genotype" in payload and "state_dict" in payload:
        hparams, state = payload, payload["state_dict"]
    else:
        raise ConfigError(f"checkpoint={path}: holds neither a segnas Lightning checkpoint nor a model.pt")
    if not hparams.get("genotype"):
        raise ConfigError(f"checkpoint={path}: has no genotype, so its network cannot be rebuilt")
    genotype = Genotype.from_dict(hparams["genotype"], source=str(path))
    num_classes = int(hparams["num_classes"])
    net = spaces.build(genotype, num_classes)
    net.load_state_dict(state)
    return genotype, num_classes, net


def save_network(
    path: str | Path, genotype: Genotype, num_classes: int, net: nn.Module, facts: dict[str, Any] | None = None
) -> Path:
    """A Lightning-free file with everything ``load_network`` needs, for taking a model elsewhere;
    ``facts`` (how it was trained: epochs, images seen, ...) travel with it (:func:`network_facts`)."""
    path = Path(path)
    torch.save(
        {
            "genotype": genotype.to_dict(),
            "num_classes": num_classes,
            "state_dict": net.state_dict(),
            "facts": dict(facts or {}),
        },
        path,
    )
    return path


def network_facts(path: str | Path) -> dict[str, Any]:
    """The ``facts`` a ``model.pt`` was saved with ({} for other files and older ones). The file is
    memory-mapped, so its weights are not read."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # a file torch cannot map (the legacy, non-zip format): it has no facts
        return {}
    return dict(payload.get("facts") or {}) if isinstance(payload, dict) else {}
