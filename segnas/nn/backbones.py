"""Backbones from timm, offline by default.

A backbone is a timm ``features_only=True`` model: its forward returns one feature map per
``out_indices`` entry and ``model.feature_info.channels()`` / ``.reduction()`` describe them.
That is the whole contract the heads in ``segnas.nn`` rely on, so any timm family that supports
``features_only`` and ``output_stride`` can be swapped in by name.

Weights come from nowhere unless asked for: ``pretrained=False`` is the default, ``weights=`` loads
a local file (timm's or torchvision's layout) or ``auto``, the ImageNet file the install step put in
the cache (:mod:`segnas.nn.pretrained`), and ``pretrained=True`` downloads through timm (and fails
with a message that says how to stay offline when there is no network).
"""

from __future__ import annotations

import difflib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from segnas.errors import ConfigError, WeightsError
from segnas.nn.pretrained import from_torchvision, torchvision_keys
from segnas.offline_weights import AUTO, WEIGHTS_KEY, missing_message, resolve

log = logging.getLogger(__name__)

#: Config keys named in error messages; the DeepLabV3+ space stores these labels under ``arch``.
PRETRAINED_KEY = "model.pretrained"
BACKBONE_KEY = "arch.backbone"


def unknown_backbone_message(name: str) -> str | None:
    """``None`` if timm knows ``name``, else a sentence naming a few close timm models.

    Shared by :func:`build_backbone` and by spaces that validate a backbone label before building,
    so a typo is reported the same way wherever it is caught.
    """
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    hint = f"close timm names: {', '.join(close)}" if close else "see timm.list_models()"
    return f"unknown timm backbone '{name}' ({hint})"


def build_backbone(
    name: str,
    output_stride: int = 16,
    pretrained: bool = False,
    weights: str | Path | None = None,
    out_indices: Sequence[int] = (1, 2, 3, 4),
) -> nn.Module:
    """A timm feature extractor whose deepest feature map has stride ``output_stride``.

    ``weights`` (a local file) wins over ``pretrained``. It may hold the backbone's own state dict
    (``model.state_dict()`` of a segnas backbone, possibly nested under any prefix in a Lightning
    checkpoint), a full timm model checkpoint (what timm publishes) or, for a backbone with a
    torchvision twin, torchvision's checkpoint. ``auto`` is the cached ImageNet file of ``name``,
    or nothing (with a warning) when there is none.

    Raises ConfigError for an unknown name or a backbone that cannot dilate to ``output_stride``,
    and WeightsError when weights were asked for but cannot be had.
    """
    message = unknown_backbone_message(name)
    if message is not None:
        raise ConfigError(f"{BACKBONE_KEY}: {message}")
    kwargs: dict[str, Any] = dict(features_only=True, out_indices=tuple(out_indices), output_stride=output_stride)
    file = resolve(weights, name)
    if weights is not None and str(weights) == AUTO and file is None:
        log.warning(missing_message(name))
    if file is not None:
        log.info("backbone %s: initial weights from %s", name, file)
        model = timm.create_model(name, pretrained=False, **kwargs)
        model = _load_weights(model, name, file, kwargs)
    elif pretrained:
        log.info("backbone %s: timm's pretrained weights (%s=true)", name, PRETRAINED_KEY)
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except (OSError, RuntimeError, ValueError) as err:
            raise WeightsError(
                f"{PRETRAINED_KEY}=true: could not get pretrained weights for '{name}' ({err}); "
                f"set {WEIGHTS_KEY} to a local weights file, or {PRETRAINED_KEY}=false"
            ) from err
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    reached = model.feature_info.reduction()[-1]
    if reached != output_stride:
        raise ConfigError(
            f"backbone '{name}' reaches stride {reached}, not output_stride={output_stride} "
            "(it does not support dilation to that stride, or out_indices stop early)"
        )
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a raw state dict, ``{"state_dict": ...}`` (Lightning) or
    ``{"model": ...}``, saved by ``torch.save`` or as ``.safetensors``.

    Files are read with ``weights_only=True`` so that a downloaded checkpoint cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{WEIGHTS_KEY}={path}: file not found; give the path of a local weights file, or set {WEIGHTS_KEY}=null"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"{WEIGHTS_KEY}={path}: cannot read it as weights ({err}); a checkpoint that pickles "
            "objects other than tensors can be reduced with "
            "torch.save(torch.load(ckpt, weights_only=False)['state_dict'], 'weights.pt')"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping):
        raise WeightsError(f"{WEIGHTS_KEY}={path}: holds a {type(data).__name__}, not a state dict")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def strip_to(state: Mapping[str, torch.Tensor], expected: Sequence[str]) -> dict | None:
    """The entries of ``state`` under the one key prefix that holds every ``expected`` key.

    A Lightning checkpoint stores the backbone as e.g. ``net.backbone.conv_stem.weight``: the
    prefix is found from where the first expected key sits, so no wrapper names are hard-coded.
    Returns ``None`` when no prefix covers all expected keys.
    """
    anchor = expected[0]
    prefixes = {key[: -len(anchor)] for key in state if key.endswith(anchor)}
    for prefix in sorted(prefixes, key=len):
        if prefix and not prefix.endswith("."):
            continue
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if all(key in stripped for key in expected):
            return stripped
    return None


def _load_weights(model: nn.Module, name: str, path: str | Path, kwargs: dict[str, Any]) -> nn.Module:
    """Load a local file into the freshly built backbone ``model`` (or rebuild it from the file).

    timm renames modules when it wraps some families (Xception) as feature extractors, so a full
    model checkpoint is handed to timm's own loader rather than matched key by key here. A
    torchvision checkpoint (found by its keys, ``features.0.0.weight`` ...) is renamed into a
    full timm checkpoint first.
    """
    state = read_state_dict(path)
    layout = torchvision_keys(name)
    torchvision = strip_to(state, list(layout)) if layout is not None else None
    if torchvision is not None:
        state = from_torchvision(name, torchvision, f"{WEIGHTS_KEY}={path}")
    expected = list(model.state_dict())
    own = strip_to(state, expected)
    if own is not None:
        try:
            model.load_state_dict({k: own[k] for k in expected})
        except RuntimeError as err:
            raise _mismatch(path, name, err) from err
        return model
    full_model = timm.create_model(name, pretrained=False)
    head = str(full_model.pretrained_cfg.get("classifier") or "")
    full_keys = list(full_model.state_dict())
    body = [k for k in full_keys if not (head and k.startswith(head + "."))]
    full = strip_to(state, body)
    if full is None:
        raise WeightsError(
            f"{WEIGHTS_KEY}={path}: no weights for backbone '{name}' in this file (looked for "
            f"'{expected[0]}' and '{full_keys[0]}' under any prefix); check {BACKBONE_KEY}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "backbone.pt"
        torch.save(full, file)
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kwargs)
        except RuntimeError as err:
            raise _mismatch(path, name, err) from err


def _mismatch(path: str | Path, name: str, err: Exception) -> WeightsError:
    """Same keys, other shapes: typically weights of a sibling model (another width multiplier)."""
    return WeightsError(f"{WEIGHTS_KEY}={path}: its tensors do not fit backbone '{name}' ({err}); check {BACKBONE_KEY}")
