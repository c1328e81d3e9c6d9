"""Sub-networks of a DeepLabV3+ (once-for-all style): fewer blocks, fewer channels, fewer ASPP
branches, each choice expressed as slicing the weights of one trained network.

Two views of the same sub-network are provided on purpose:

- :func:`extract` returns a standalone, smaller :class:`~segnas.nn.DeepLabV3Plus` that carries
  the sliced weights (what is scored, fine-tuned, exported and costed);
- :func:`active` runs the full network with forward hooks that skip blocks and zero channels
  (the "supernet under an active configuration").

They are built independently, so the test that their outputs agree checks the slicing.

What is elastic (:class:`SubnetConfig`):

- ``depths``: per elastic backbone stage, keep the first d blocks. Only stages of inverted
  residual blocks (timm's EfficientNet family: MobileNetV2/V3, EfficientNet) are elastic; a block
  after the first of a stage has a residual connection with equal in/out shape, so dropping it
  leaves an identity, which keeps every tensor shape downstream.
- ``widths``: per elastic stage, the fraction of each block's expanded (hidden) channels kept.
  Hidden channels live between the block's 1x1 expansion and its 1x1 projection, so slicing them
  never changes a block's interface.
- ``aspp_rates``: the atrous branches kept (a subset of the trained network's rates); the 1x1 and
  image-pooling branches always stay.
- ``aspp_channels`` / ``decoder_channels``: the first k output channels of every ASPP branch and
  projection, and of the decoder's two refinement convolutions.

Channels are kept "first k" (``torch.arange(k)``); :func:`sort_hidden_channels` permutes a trained
network's hidden channels once by importance (L1 norm of the projection weights) so that first-k
keeps the most important ones without changing the network's function.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from segnas.errors import GenotypeError
from segnas.nn.deeplab import DeepLabV3Plus


@dataclass(frozen=True)
class SubnetConfig:
    """The active configuration of a DeepLabV3+ supernet (see the module docstring)."""

    depths: tuple[int, ...]
    widths: tuple[float, ...]
    aspp_rates: tuple[int, ...]
    aspp_channels: int
    decoder_channels: int


def _is_inverted_residual(block: nn.Module) -> bool:
    return all(hasattr(block, name) for name in ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl"))


def elastic_stages(backbone: nn.Module) -> list[nn.Sequential]:
    """The backbone stages whose depth and hidden width can shrink, in forward order.

    Empty for backbones without inverted-residual stages (e.g. Xception, ResNet): for those only
    the ASPP and decoder are elastic.
    """
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        return []
    return [stage for stage in blocks
            if isinstance(stage, nn.Sequential) and len(stage) and all(map(_is_inverted_residual, stage))]


def stage_depths(backbone: nn.Module) -> list[int]:
    return [len(stage) for stage in elastic_stages(backbone)]


def kept_channels(full: int, ratio: float) -> int:
    """Channels kept out of ``full`` at width ``ratio`` (at least one)."""
    return max(1, round(full * float(ratio)))


def _first(k: int) -> torch.Tensor:
    return torch.arange(k)


def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None = None,
                in_idx: torch.Tensor | None = None) -> nn.Conv2d:
    """A copy of ``conv`` keeping output channels ``out_idx`` and input channels ``in_idx``.

    A depthwise convolution (groups == channels) keeps ``out_idx`` on both sides.
    """
    new = copy.copy(conv)
    new._parameters, new._modules = dict(conv._parameters), dict(conv._modules)
    weight = conv.weight.detach()
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if depthwise:
        if out_idx is not None:
            weight = weight[out_idx]
            new.in_channels = new.out_channels = new.groups = len(out_idx)
    else:
        if conv.groups != 1:
            raise GenotypeError(f"cannot slice a grouped convolution ({conv})")
        if out_idx is not None:
            weight = weight[out_idx]
            new.out_channels = len(out_idx)
        if in_idx is not None:
            weight = weight[:, in_idx]
            new.in_channels = len(in_idx)
    new.weight = nn.Parameter(weight.clone(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        bias = conv.bias.detach()
        new.bias = nn.Parameter((bias[out_idx] if out_idx is not None else bias).clone())
    return new


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of ``bn`` (timm's BatchNormAct2d included) keeping channels ``idx``."""
    new = copy.copy(bn)
    new._parameters, new._buffers, new._modules = dict(bn._parameters), dict(bn._buffers), dict(bn._modules)
    new.num_features = len(idx)
    if bn.affine:
        new.weight = nn.Parameter(bn.weight.detach()[idx].clone())
        new.bias = nn.Parameter(bn.bias.detach()[idx].clone())
    if bn.running_mean is not None:
        new.running_mean = bn.running_mean[idx].clone()
        new.running_var = bn.running_var[idx].clone()
        new.num_batches_tracked = bn.num_batches_tracked.clone()
    return new


def _slice_conv_bn_relu(block: nn.Sequential, out_idx: torch.Tensor | None,
                        in_idx: torch.Tensor | None) -> nn.Sequential:
    conv, bn, act = block
    out = out_idx if out_idx is not None else _first(conv.out_channels)
    return nn.Sequential(_slice_conv(conv, out_idx, in_idx), _slice_bn(bn, out), act)


def _check_lengths(backbone: nn.Module, depths: Sequence[int], widths: Sequence[float]) -> list[int]:
    full = stage_depths(backbone)
    if len(depths) != len(full) or len(widths) != len(full):
        raise GenotypeError(f"depths {list(depths)} and widths {list(widths)} must have one entry per "
                            f"elastic backbone stage ({len(full)}: full depths {full})")
    for depth, most in zip(depths, full):
        if not 1 <= int(depth) <= most:
            raise GenotypeError(f"depths {list(depths)}: each must lie in [1, full depth] with full depths {full}")
    for width in widths:
        if not 0.0 < float(width) <= 1.0:
            raise GenotypeError(f"widths {list(widths)}: each must lie in (0, 1]")
    return full


def shrink_backbone(backbone: nn.Module, depths: Sequence[int], widths: Sequence[float]) -> nn.Module:
    """Slice ``backbone`` in place: first ``depths[s]`` blocks and ``widths[s]`` of the hidden
    channels of every block of elastic stage ``s``. Returns ``backbone``."""
    _check_lengths(backbone, depths, widths)
    stages = elastic_stages(backbone)
    if not stages:
        return backbone
    positions = [i for i, stage in enumerate(backbone.blocks) if any(stage is s for s in stages)]
    for position, stage, depth, width in zip(positions, stages, depths, widths):
        kept = nn.Sequential(*list(stage)[: int(depth)])
        for block in kept:
            if not isinstance(getattr(block, "se", nn.Identity()), nn.Identity):
                raise GenotypeError("width slicing of blocks with squeeze-excitation is not supported")
            idx = _first(kept_channels(block.conv_pw.out_channels, width))
            block.conv_pw = _slice_conv(block.conv_pw, out_idx=idx)
            block.bn1 = _slice_bn(block.bn1, idx)
            block.conv_dw = _slice_conv(block.conv_dw, out_idx=idx)
            block.bn2 = _slice_bn(block.bn2, idx)
            block.conv_pwl = _slice_conv(block.conv_pwl, in_idx=idx)
        backbone.blocks[position] = kept
    return backbone


def _aspp_positions(net: DeepLabV3Plus, rates: Sequence[int]) -> list[int]:
    """Branch indices kept for ``rates``: 1x1 first, the kept atrous branches, pooling last."""
    full = list(net.aspp.rates)
    missing = [r for r in rates if r not in full]
    if missing:
        raise GenotypeError(f"aspp_rates {list(rates)}: rates {missing} are not branches of the "
                            f"trained network (its rates: {full})")
    kept = [1 + full.index(r) for r in sorted({int(r) for r in rates}, key=full.index)]
    last = len(net.aspp.branches) - 1
    pooling = [last] if last == len(full) + 1 else []
    return [0, *kept, *pooling]


def check_head(net: DeepLabV3Plus, config: SubnetConfig) -> None:
    if not 1 <= config.aspp_channels <= net.aspp.out_channels:
        raise GenotypeError(f"aspp_channels={config.aspp_channels}: must lie in [1, {net.aspp.out_channels}]")
    full_decoder = net.decoder.classifier.in_channels
    if not 1 <= config.decoder_channels <= full_decoder:
        raise GenotypeError(f"decoder_channels={config.decoder_channels}: must lie in [1, {full_decoder}]")


def extract(net: DeepLabV3Plus, config: SubnetConfig) -> DeepLabV3Plus:
    """A standalone copy of ``net`` restricted to ``config``, carrying sliced weights.

    ``net`` itself is not modified. The full configuration returns an exact copy.
    """
    check_head(net, config)
    positions = _aspp_positions(net, config.aspp_rates)
    full_aspp = net.aspp.out_channels
    sub = copy.deepcopy(net)
    shrink_backbone(sub.backbone, config.depths, config.widths)
    aspp_idx = _first(config.aspp_channels)
    branches = []
    for position in positions:
        branch = sub.aspp.branches[position]
        if hasattr(branch, "project"):  # image pooling
            branch.project = _slice_conv_bn_relu(branch.project, aspp_idx, None)
        else:
            branch = _slice_conv_bn_relu(branch, aspp_idx, None)
        branches.append(branch)
    sub.aspp.branches = nn.ModuleList(branches)
    sub.aspp.rates = tuple(net.aspp.rates[p - 1] for p in positions[1:] if p <= len(net.aspp.rates))
    sub.aspp.out_channels = config.aspp_channels
    concat_idx = torch.cat([p * full_aspp + aspp_idx for p in positions])
    sub.aspp.project[0] = _slice_conv_bn_relu(sub.aspp.project[0], aspp_idx, concat_idx)
    decoder = sub.decoder
    low = decoder.low_level[0].out_channels
    dec_idx = _first(config.decoder_channels)
    decoder.refine[0] = _slice_conv_bn_relu(
        decoder.refine[0], dec_idx, torch.cat([aspp_idx, full_aspp + torch.arange(low)]))
    decoder.refine[1] = _slice_conv_bn_relu(decoder.refine[1], dec_idx, dec_idx)
    decoder.classifier = _slice_conv(decoder.classifier, in_idx=dec_idx)
    return sub


def full_config(net: DeepLabV3Plus) -> SubnetConfig:
    """The configuration that keeps everything: extracting it reproduces ``net``."""
    depths = stage_depths(net.backbone)
    return SubnetConfig(tuple(depths), tuple(1.0 for _ in depths), tuple(net.aspp.rates),
                        net.aspp.out_channels, net.decoder.classifier.in_channels)


def _mask(channels: int, kept: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(1, channels, 1, 1, dtype=like.dtype, device=like.device)
    mask[:, :kept] = 1
    return mask


@contextlib.contextmanager
def active(net: DeepLabV3Plus, config: SubnetConfig) -> Iterator[DeepLabV3Plus]:
    """Run ``net`` itself as the sub-network ``config`` inside the ``with`` block.

    Forward hooks replace dropped residual blocks by their input and zero dropped channels and
    ASPP branches; zeros entering the next convolution contribute nothing, which is what slicing
    its input channels does. BatchNorm statistics stay the full network's (no recalibration).
    """
    _check_lengths(net.backbone, config.depths, config.widths)
    check_head(net, config)
    positions = set(_aspp_positions(net, config.aspp_rates))
    handles = []

    def scale(kept: int):
        return lambda module, inputs, output: output * _mask(output.shape[1], kept, output)

    try:
        for stage, depth, width in zip(elastic_stages(net.backbone), config.depths, config.widths):
            for index, block in enumerate(stage):
                if index >= depth:
                    handles.append(block.register_forward_hook(lambda m, inputs, output: inputs[0]))
                else:
                    hidden = kept_channels(block.conv_pw.out_channels, width)
                    handles.append(block.bn2.register_forward_hook(scale(hidden)))
        for position, branch in enumerate(net.aspp.branches):
            handles.append(branch.register_forward_hook(scale(config.aspp_channels if position in positions else 0)))
        handles.append(net.aspp.project[0].register_forward_hook(scale(config.aspp_channels)))
        for refine in net.decoder.refine:
            handles.append(refine.register_forward_hook(scale(config.decoder_channels)))
        yield net
    finally:
        for handle in handles:
            handle.remove()


def sort_hidden_channels(net: DeepLabV3Plus) -> DeepLabV3Plus:
    """Permute every elastic block's hidden channels by decreasing importance, in place.

    Importance is the L1 norm of the projection (``conv_pwl``) weights reading the channel. The
    permutation is applied consistently to the expansion, depthwise and projection weights and to
    both BatchNorms, so the network computes exactly the same function; afterwards "keep the first
    k channels" keeps the k most important ones.
    """
    with torch.no_grad():
        for stage in elastic_stages(net.backbone):
            for block in stage:
                order = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
                for conv, dim in ((block.conv_pw, 0), (block.conv_dw, 0), (block.conv_pwl, 1)):
                    conv.weight.copy_(conv.weight.index_select(dim, order))
                for bn in (block.bn1, block.bn2):
                    for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                        if tensor is not None:
                            tensor.copy_(tensor[order])
    return net
