"""Sub-networks of a DeepLabV3+ (once-for-all style): fewer blocks, fewer channels, fewer ASPP
branches, each choice expressed as slicing the weights of one trained network.

Two views of the same sub-network are provided on purpose:

- :func:`extract` returns a standalone, smaller :class:`~segnas.nn.DeepLabV3Plus` that carries
  the sliced weights (what is scored, fine-tuned, exported and costed);
- :func:`active` runs the full network with forward hooks that skip blocks and zero channels
  (the "supernet under an active configuration").

They are built independently, so the test that their outputs agree checks the slicing.

What is elastic (:class:`SubnetConfig`; which backbone parts, see :mod:`segnas.nn.elastic_stages`):

- ``depths``: per elastic backbone stage, keep the first d blocks. Every block of a stage after
  its first adds its input back with an equal in/out shape, so dropping it leaves an identity,
  which keeps every tensor shape downstream (MobileNetV2's inverted-residual stages, Xception's
  middle flow).
- ``widths``: per elastic stage, the fraction of each block's hidden channel groups kept (the
  expanded channels of an inverted residual; the two inner separable-convolution outputs of an
  Xception block). Hidden channels are written and read inside one block, so slicing them never
  changes a block's interface.
- ``aspp_rates``: the atrous branches kept (a subset of the trained network's rates); the 1x1 and
  image-pooling branches always stay.
- ``aspp_channels`` / ``decoder_channels``: the first k output channels of every ASPP branch and
  projection, and of the decoder's two refinement convolutions.

Channels are kept "first k" (``torch.arange(k)``); :func:`sort_channels` permutes every such
group of a trained network once by importance (L1 norm of the weights that read them), backbone
and head alike, so that first-k keeps the most important ones without changing the function.
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
from segnas.nn.elastic_stages import (
    HiddenGroup,
    elastic_stages,
    hidden_groups,
    stage_depths,
)


@dataclass(frozen=True)
class SubnetConfig:
    """The active configuration of a DeepLabV3+ supernet (see the module docstring)."""

    depths: tuple[int, ...]
    widths: tuple[float, ...]
    aspp_rates: tuple[int, ...]
    aspp_channels: int
    decoder_channels: int


def kept_channels(full: int, ratio: float) -> int:
    """Channels kept out of ``full`` at width ``ratio`` (at least one)."""
    return max(1, round(full * float(ratio)))


def _first(k: int) -> torch.Tensor:
    return torch.arange(k)


def _take(tensor: torch.Tensor, dim: int, idx: torch.Tensor | None) -> torch.Tensor:
    """``tensor``'s entries ``idx`` along ``dim``: a view when ``idx`` is a prefix (first-k
    slicing: every slice but the columns read from a concatenation), else a copy."""
    if idx is None:
        return tensor
    if len(idx) and int(idx[0]) == 0 and torch.equal(idx, torch.arange(len(idx))):
        return tensor.narrow(dim, 0, len(idx))
    return tensor.index_select(dim, idx)


def _own(tensor: torch.Tensor, source: torch.Tensor, share: bool) -> torch.Tensor:
    """``tensor`` (``source`` sliced) as a new parameter's data: a copy unless ``share`` (a
    scoring-only network may read the source's storage)."""
    if share or tensor.untyped_storage().data_ptr() != source.untyped_storage().data_ptr():
        return tensor
    return tensor.clone()


def _shallow_copy(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` with its own hook tables, name sets and parameter, buffer and
    child tables (still holding ``module``'s tensors and children), so that changing the copy's
    never changes ``module``'s.

    What copy.copy makes of a module (nn.Module has no ``__copy__``, and its ``__setstate__`` only
    adds hook tables that old pickles lack), without copy.copy's ``__reduce_ex__`` round trip:
    that round trip was half the time of slicing a candidate.
    """
    new = type(module).__new__(type(module))
    new.__dict__.update(
        {
            name: value.copy() if name.startswith("_") and isinstance(value, (dict, set)) else value
            for name, value in module.__dict__.items()
        }
    )
    return new


def _slice_conv(
    conv: nn.Conv2d, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None, share: bool = False
) -> nn.Conv2d:
    """A copy of ``conv`` keeping output channels ``out_idx`` and input channels ``in_idx``
    (``share``: its weights may be views of ``conv``'s, see :func:`extract`).

    A depthwise convolution (groups == channels) keeps ``out_idx`` on both sides.
    """
    new = _shallow_copy(conv)
    weight = conv.weight.detach()
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if depthwise:
        if out_idx is not None:
            weight = _take(weight, 0, out_idx)
            new.in_channels = new.out_channels = new.groups = len(out_idx)
    else:
        if conv.groups != 1:
            raise GenotypeError(f"cannot slice a grouped convolution ({conv})")
        if out_idx is not None:
            weight = _take(weight, 0, out_idx)
            new.out_channels = len(out_idx)
        if in_idx is not None:
            weight = _take(weight, 1, in_idx)
            new.in_channels = len(in_idx)
    new.weight = nn.Parameter(_own(weight, conv.weight, share), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias = nn.Parameter(_own(_take(conv.bias.detach(), 0, out_idx), conv.bias, share))
    return new


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor, share: bool = False) -> nn.BatchNorm2d:
    """A copy of ``bn`` (timm's BatchNormAct2d included) keeping channels ``idx``; its running
    statistics are always its own (recalibration writes them)."""
    new = _shallow_copy(bn)
    new.num_features = len(idx)
    if bn.affine:
        new.weight = nn.Parameter(_own(_take(bn.weight.detach(), 0, idx), bn.weight, share))
        new.bias = nn.Parameter(_own(_take(bn.bias.detach(), 0, idx), bn.bias, share))
    if bn.running_mean is not None:
        new.running_mean = _take(bn.running_mean, 0, idx).clone()
        new.running_var = _take(bn.running_var, 0, idx).clone()
        new.num_batches_tracked = bn.num_batches_tracked.clone()
    return new


def _slice_conv_bn_relu(
    block: nn.Sequential, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None, share: bool = False
) -> nn.Sequential:
    conv, bn, act = block
    out = out_idx if out_idx is not None else _first(conv.out_channels)
    return nn.Sequential(_slice_conv(conv, out_idx, in_idx, share), _slice_bn(bn, out, share), act)


def _check_lengths(backbone: nn.Module, depths: Sequence[int], widths: Sequence[float]) -> list[int]:
    full = stage_depths(backbone)
    if len(depths) != len(full) or len(widths) != len(full):
        raise GenotypeError(
            f"depths {list(depths)} and widths {list(widths)} must have one entry per "
            f"elastic backbone stage ({len(full)}: full depths {full})"
        )
    for depth, most in zip(depths, full):
        if not 1 <= int(depth) <= most:
            raise GenotypeError(f"depths {list(depths)}: each must lie in [1, full depth] with full depths {full}")
    for width in widths:
        if not 0.0 < float(width) <= 1.0:
            raise GenotypeError(f"widths {list(widths)}: each must lie in (0, 1]")
    return full


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _slice_group(block: nn.Module, group: HiddenGroup, width: float, share: bool = False) -> None:
    """Keep the first ``width`` of ``group``'s channels in every module that holds them (the
    whole group kept: nothing to slice)."""
    producer = block.get_submodule(group.producer)
    kept = kept_channels(producer.out_channels, width)
    if kept == producer.out_channels:
        return
    idx = _first(kept)
    _replace(block, group.producer, _slice_conv(producer, out_idx=idx, share=share))
    for path in group.channelwise:
        module = block.get_submodule(path)
        sliced = (
            _slice_bn(module, idx, share)
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            else _slice_conv(module, out_idx=idx, share=share)
        )
        _replace(block, path, sliced)
    _replace(block, group.consumer, _slice_conv(block.get_submodule(group.consumer), in_idx=idx, share=share))


def shrink_backbone(
    backbone: nn.Module, depths: Sequence[int], widths: Sequence[float], share: bool = False
) -> nn.Module:
    """Slice ``backbone`` in place: first ``depths[s]`` blocks and ``widths[s]`` of the hidden
    channels of every block of elastic stage ``s``. Returns ``backbone``. ``share``: sliced
    weights may be views of the originals (see :func:`extract`).

    Dropped blocks are deleted from their container, kept modules keep their names, so the
    state-dict keys of what stays are those of the full backbone.
    """
    _check_lengths(backbone, depths, widths)
    for stage, depth, width in zip(elastic_stages(backbone), depths, widths):
        kept = stage.blocks()[: int(depth)]
        for name in stage.names[int(depth) :]:
            delattr(stage.container, name)
        for block in kept:
            for group in hidden_groups(block):
                _slice_group(block, group, width, share)
    return backbone


def _aspp_positions(net: DeepLabV3Plus, rates: Sequence[int]) -> list[int]:
    """Branch indices kept for ``rates``: 1x1 first, the kept atrous branches, pooling last."""
    full = list(net.aspp.rates)
    missing = [r for r in rates if r not in full]
    if missing:
        raise GenotypeError(
            f"aspp_rates {list(rates)}: rates {missing} are not branches of the trained network (its rates: {full})"
        )
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


def _weight_sharing_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters are ``module``'s own tensors and whose buffers
    (BatchNorm statistics) are copies: what scoring needs, without copying the weights."""
    new = _shallow_copy(module)
    new._buffers = {name: None if value is None else value.clone() for name, value in module._buffers.items()}
    new._modules = {
        name: None if child is None else _weight_sharing_copy(child) for name, child in module._modules.items()
    }
    return new


def extract(net: DeepLabV3Plus, config: SubnetConfig, share_weights: bool = False) -> DeepLabV3Plus:
    """A copy of ``net`` restricted to ``config``, carrying sliced weights.

    ``net`` itself is not modified. The full configuration returns an exact copy.
    ``share_weights=False``: a standalone network (every tensor its own), one to fine-tune.
    ``share_weights=True``: the weights are ``net``'s own tensors or views of them (first-k
    slices; only the columns of the two convolutions that read a concatenation are copied), the
    BatchNorm statistics are copies: a network to recalibrate and score, never to train (an
    optimiser step would write into ``net``). Scoring thousands of FMAS candidates then never
    copies the supernet (a deep copy of aligned Xception-65 is ~160 MB).
    """
    check_head(net, config)
    positions = _aspp_positions(net, config.aspp_rates)
    full_aspp = net.aspp.out_channels
    sub = _weight_sharing_copy(net) if share_weights else copy.deepcopy(net)
    shrink_backbone(sub.backbone, config.depths, config.widths, share_weights)
    aspp_idx = _first(config.aspp_channels)
    branches = []
    for position in positions:
        branch = sub.aspp.branches[position]
        if hasattr(branch, "project"):  # image pooling
            branch.project = _slice_conv_bn_relu(branch.project, aspp_idx, None, share_weights)
        else:
            branch = _slice_conv_bn_relu(branch, aspp_idx, None, share_weights)
        branches.append(branch)
    sub.aspp.branches = nn.ModuleList(branches)
    sub.aspp.rates = tuple(net.aspp.rates[p - 1] for p in positions[1:] if p <= len(net.aspp.rates))
    sub.aspp.out_channels = config.aspp_channels
    concat_idx = torch.cat([p * full_aspp + aspp_idx for p in positions])
    sub.aspp.project[0] = _slice_conv_bn_relu(sub.aspp.project[0], aspp_idx, concat_idx, share_weights)
    decoder = sub.decoder
    low = decoder.low_level[0].out_channels
    dec_idx = _first(config.decoder_channels)
    decoder.refine[0] = _slice_conv_bn_relu(
        decoder.refine[0], dec_idx, torch.cat([aspp_idx, full_aspp + torch.arange(low)]), share_weights
    )
    decoder.refine[1] = _slice_conv_bn_relu(decoder.refine[1], dec_idx, dec_idx, share_weights)
    decoder.classifier = _slice_conv(decoder.classifier, in_idx=dec_idx, share=share_weights)
    return sub


def _mask(channels: int, kept: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(1, channels, 1, 1, dtype=like.dtype, device=like.device)
    mask[:, :kept] = 1
    return mask


@contextlib.contextmanager
def active(net: DeepLabV3Plus, config: SubnetConfig) -> Iterator[DeepLabV3Plus]:
    """Run ``net`` itself as the sub-network ``config`` inside the ``with`` block.

    Forward hooks replace dropped residual blocks by their input and zero dropped head channels
    and ASPP branches; pre-hooks zero dropped hidden channels where a block's convolution reads
    them. Zeros entering a convolution contribute nothing, which is what slicing its input
    channels does. BatchNorm statistics stay the full network's (no recalibration).
    """
    _check_lengths(net.backbone, config.depths, config.widths)
    check_head(net, config)
    positions = set(_aspp_positions(net, config.aspp_rates))
    handles = []

    def scale(kept: int):
        return lambda module, inputs, output: output * _mask(output.shape[1], kept, output)

    def mask_input(kept: int):
        return lambda module, inputs: (inputs[0] * _mask(inputs[0].shape[1], kept, inputs[0]), *inputs[1:])

    try:
        for stage, depth, width in zip(elastic_stages(net.backbone), config.depths, config.widths):
            for index, block in enumerate(stage.blocks()):
                if index >= depth:
                    handles.append(block.register_forward_hook(lambda m, inputs, output: inputs[0]))
                    continue
                for group in hidden_groups(block):
                    hidden = kept_channels(block.get_submodule(group.producer).out_channels, width)
                    handles.append(block.get_submodule(group.consumer).register_forward_pre_hook(mask_input(hidden)))
        for position, branch in enumerate(net.aspp.branches):
            handles.append(branch.register_forward_hook(scale(config.aspp_channels if position in positions else 0)))
        handles.append(net.aspp.project[0].register_forward_hook(scale(config.aspp_channels)))
        for refine in net.decoder.refine:
            handles.append(refine.register_forward_hook(scale(config.decoder_channels)))
        yield net
    finally:
        for handle in handles:
            handle.remove()


def _order_by_readers(consumer: nn.Conv2d, carriers: Sequence[nn.Module], start: int = 0) -> None:
    """Permute one channel group by decreasing importance, in place, keeping the function.

    The group is the ``carriers``' channels (output channels of a convolution, channels of a
    BatchNorm or depthwise convolution), read as input channels ``start`` onward of ``consumer``.
    Importance is the L1 norm of the consumer weights reading a channel (as in once-for-all's
    channel sorting before progressive shrinking, Cai et al., ICLR 2020); the same permutation
    goes to every carrier and to the consumer's input columns, so only the order changes.
    """
    count = carriers[0].weight.shape[0]
    columns = consumer.weight[:, start : start + count]
    order = torch.argsort(columns.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
    columns.copy_(columns.index_select(1, order))  # a view: writes into the consumer's weight
    for module in carriers:
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(module, name, None)
            if tensor is not None:
                tensor.copy_(tensor.index_select(0, order))


def sort_channels(net: DeepLabV3Plus) -> DeepLabV3Plus:
    """Permute every channel group :func:`extract` slices by decreasing importance, in place.

    Groups: every elastic block's hidden channels (read by the projection ``conv_pwl`` of an
    inverted residual, the next pointwise conv in an Xception block); each ASPP branch's outputs
    (read by its columns of the ASPP projection); the ASPP projection's outputs (read by the
    decoder's first refinement convolution); each refinement convolution's outputs (read by the
    next one, then by the classifier). Every group is permuted consistently (producer outputs,
    BatchNorms, depthwise convs, consumer inputs), so the network computes the same function;
    afterwards "keep the first k channels" keeps the k most important ones of every group.
    """
    with torch.no_grad():
        for stage in elastic_stages(net.backbone):
            for block in stage.blocks():
                for group in hidden_groups(block):
                    _order_by_readers(
                        block.get_submodule(group.consumer),
                        [block.get_submodule(p) for p in (group.producer, *group.channelwise)],
                    )
        aspp, decoder = net.aspp, net.decoder
        projection = aspp.project[0]
        for position, branch in enumerate(aspp.branches):
            conv, norm, _ = branch.project if hasattr(branch, "project") else branch
            _order_by_readers(projection[0], [conv, norm], start=position * aspp.out_channels)
        _order_by_readers(decoder.refine[0][0], list(projection[:2]))  # the ASPP output comes first
        _order_by_readers(decoder.refine[1][0], list(decoder.refine[0][:2]))
        _order_by_readers(decoder.classifier, list(decoder.refine[1][:2]))
    return net
