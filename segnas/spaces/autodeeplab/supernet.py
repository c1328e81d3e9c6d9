"""The Auto-DeepLab search supernet: every cell mixes all operations (α), every trellis node sums
the cells arriving from the finer, the same and the coarser resolution (β, Eq. 6).

Layout (paper, Sec. 3-4): a two-layer stem to stride 4, then L layers over strides 4-32. The node
at level k (stride s = 4·2^k) has B·F·2^k channels. A cell reads H1 = a node of the previous
layer and H2 = the node at the same level two layers back (Eq. 6). Where that node does not exist
yet (the trellis has not reached level k by layer l-2), H2 is the coarsest node of layer l-2 —
the node any path into (l, k) passed through — and for layer 1 the stem's stride-2 output.
Moving between resolutions, the supernet resamples H1 bilinearly before the cell (as the public
reimplementations do); the final network (``network.py``) moves inside the cell ops as the
authors' released network does. After layer L, one small ASPP per resolution (1×1 conv, one 3×3
atrous conv of rate 96/s, image pooling) predicts classes; the predictions are upsampled to the
input and summed. Each ASPP branch has B·F·s/4 filters, its node's own width (paper, Sec. 5.1),
unless ``aspp_channels`` fixes one width for every level.

α and β are registered parameters (``arch_parameters``), separate from ``weight_parameters``, so
the weight optimiser never sees them and DDP keeps them identical on every rank.

Memory options: ``recompute`` keeps, of each block's activations, only its input and its atrous
convolutions' output, and recomputes the rest in the backward pass (exact: the gradients are
bitwise those of the plain graph; ``BlockEdges.forward``): much less peak memory at the paper's
321×321 for a little more time, while at a small CPU search it saves little and costs more, so
it is off unless asked for (BENCHMARKS.md, "selective recomputation"). ``checkpoint_cells``
recomputes each whole cell in the backward pass instead (exact gradients; BatchNorm running
statistics see each batch twice). ``partial_channels`` = K > 1 sends only 1/K of
a state's channels through the mixed operations (PC-DARTS, Xu et al. 2020) — an approximation
of the paper's supernet, off by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from segnas.nn.aspp import ASPP
from segnas.nn.cell_ops import PRIMITIVES, ReLUConvBN
from segnas.nn.recompute import Recomputation
from segnas.spaces.autodeeplab.decode import (
    NUM_LEVELS,
    TRANSITIONS,
    level_exists,
    normalise_alpha,
    normalise_beta,
    num_edges,
)


def halve(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def _column(name: str) -> int:
    return PRIMITIVES.index(name)


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(0, 2, 3))


def _stats_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for a bf16 / fp16 tensor (what autocast gives a convolution), else its own dtype:
    batch statistics and per-channel sums accumulated in half precision lose the digits the
    running buffers and the gradients need (nn.BatchNorm2d's kernels accumulate in float32 too)."""
    return torch.promote_types(t.dtype, torch.float32)


def _global_moments(
    mean: torch.Tensor, var: torch.Tensor, count: int, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The mean, biased variance and count over every rank of ``group`` from each rank's own:
    all_gather of [mean, var, count] (counts may differ between ranks), then the parallel
    variance formula Σ n_r (var_r + (mean_r - mean)²) / Σ n_r."""
    local = torch.cat([mean, var, mean.new_full((1,), count)])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    means, variances, counts = torch.stack(gathered).split([mean.numel(), var.numel(), 1], dim=1)
    total = counts.sum()
    global_mean = (counts * means).sum(0) / total
    global_var = (counts * (variances + (means - global_mean).square())).sum(0) / total
    return global_mean, global_var, int(total.item())


class _NormScale(torch.autograd.Function):
    """BatchNorm with batch statistics (no affine) times per-channel weights; keeps only the
    input for backward and recomputes the normalised tensor there.

    With a process ``group``, the statistics are those of the whole batch across its ranks, as
    ``torch.nn.SyncBatchNorm`` computes them (torch/nn/modules/_functions.py ``SyncBatchNorm``:
    forward all_gathers each rank's mean, variance and count and combines them with the counts;
    backward all_reduces the two per-channel sums the input gradient needs, Σ g and Σ g·BN(z),
    and divides by the global count; the gradient of the weights stays the rank's own, which
    DDP then reduces).

    Under autocast the input is bf16 / fp16: statistics and sums are computed in float32
    (:func:`_stats_dtype`), and the output has the dtype ``nn.BatchNorm2d(z) * scales`` has
    (BatchNorm keeps its input's dtype, the product promotes it with the scales').
    """

    @staticmethod
    def forward(
        ctx, z: torch.Tensor, scales: torch.Tensor, eps: float, group: dist.ProcessGroup | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Returns the output, the batch mean and unbiased variance (over every rank of
        ``group``), in float32 or wider, for the running buffers, and the inverse standard
        deviation the output was normalised with (to recompute it: :func:`_normalised`)."""
        wide = z.to(_stats_dtype(z))
        var, mean = torch.var_mean(wide, dim=(0, 2, 3), correction=0)
        count = z.numel() // z.shape[1]
        if group is not None:
            mean, var, count = _global_moments(mean, var, count, group)
        invstd = (var + eps).rsqrt()
        ctx.save_for_backward(z, mean, invstd, scales)
        ctx.count, ctx.group = count, group
        unbiased = var * count / max(count - 1, 1)  # as nn.BatchNorm2d updates running_var
        ctx.mark_non_differentiable(mean, unbiased, invstd)
        return _normalised(z, mean, invstd, scales), mean, unbiased, invstd

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None, None]:
        z, mean, invstd, scales = ctx.saved_tensors
        grad = grad.to(mean.dtype)
        s = scales.to(mean.dtype).view(1, -1, 1, 1)
        normed = (z.to(mean.dtype) - mean.view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1)
        sum_g, grad_scales = _channel_sum(grad), _channel_sum(grad * normed)
        sum_gn = grad_scales  # the scales' gradient stays this rank's; the input's needs every rank's sums
        if ctx.group is not None:
            sums = torch.cat([sum_g, grad_scales])
            dist.all_reduce(sums, group=ctx.group)
            sum_g, sum_gn = sums.chunk(2)
        # d/dz of BN(z)·s: invstd · (g·s - mean(g·s) - BN(z) · mean(g·s · BN(z)))
        mean_g = (sum_g / ctx.count).view(1, -1, 1, 1) * s
        mean_gn = (sum_gn / ctx.count).view(1, -1, 1, 1) * s
        grad_z = (grad * s - mean_g - normed * mean_gn) * invstd.view(1, -1, 1, 1)
        return grad_z.to(z.dtype), grad_scales.to(scales.dtype) if ctx.needs_input_grad[1] else None, None, None


def _normalised(z: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(z - mean) · invstd · scales per channel, computed in the statistics' dtype and returned in
    ``promote(z, scales)``: the forward of :class:`_NormScale`, and its exact recomputation."""
    wide = z.to(mean.dtype)
    out = (wide - mean.view(1, -1, 1, 1)) * (invstd * scales.to(invstd.dtype)).view(1, -1, 1, 1)
    return out.to(torch.promote_types(z.dtype, scales.dtype))


class _PoolMix(torch.autograd.Function):
    """3×3 max pool, 3×3 average pool and identity of ``x``, each times its per-channel weight,
    summed; keeps only ``x`` for backward and recomputes the pools there.

    Under autocast ``x`` is bf16 / fp16 and the output promotes to the scales' float32, as the
    plain ops do; the pools' backward kernels then take the gradient in ``x``'s dtype, as the
    plain ops' autograd hands it to them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        s_max, s_avg, s_skip = (t.view(1, -1, 1, 1) for t in scales.chunk(3))
        ctx.save_for_backward(x, scales)
        return F.max_pool2d(x, 3, 1, 1) * s_max + F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) * s_avg + x * s_skip

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, scales = ctx.saved_tensors
        s_max, s_avg, s_skip = (t.view(1, -1, 1, 1) for t in scales.chunk(3))
        pooled, indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
        averaged = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        grad_scales = torch.cat([_channel_sum(grad * pooled), _channel_sum(grad * averaged), _channel_sum(grad * x)])
        grad_x = (
            torch.ops.aten.max_pool2d_with_indices_backward(
                (grad * s_max).to(x.dtype), x, [3, 3], [1, 1], [1, 1], [1, 1], False, indices
            )
            + torch.ops.aten.avg_pool2d_backward(
                (grad * s_avg).to(x.dtype), x, [3, 3], [1, 1], [1, 1], False, False, None
            )
            + grad * s_skip
        )
        return grad_x.to(x.dtype), grad_scales.to(scales.dtype)


def _sync_group(norm: nn.BatchNorm2d) -> dist.ProcessGroup | None:
    """The process group whose batch statistics ``norm`` must use: its own (or the world) when it
    is a ``SyncBatchNorm`` (the layer sync converted it: the user asked for synchronised
    BatchNorm) and the group has more than one rank; else None, this rank's batch alone."""
    if not (isinstance(norm, nn.SyncBatchNorm) and dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _norm_scale(
    norm: nn.BatchNorm2d, z: torch.Tensor, scales: torch.Tensor, keep: Recomputation | None = None
) -> torch.Tensor:
    """``norm(z)`` times per-channel weights; in training the running buffers are updated here
    exactly as ``nn.BatchNorm2d`` (or ``nn.SyncBatchNorm``, with every rank's statistics) updates
    them, in their own dtype, and the normalised tensor is not stored. With ``keep``, the output
    is marked as recomputable from ``z`` and the batch statistics (no collective is repeated)."""
    if not norm.training:
        return norm(z) * scales.view(1, -1, 1, 1)
    out, mean, var, invstd = _NormScale.apply(z, scales, norm.eps, _sync_group(norm))
    with torch.no_grad():
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), norm.momentum)
        norm.running_var.lerp_(var.to(norm.running_var.dtype), norm.momentum)
        norm.num_batches_tracked += 1
    if keep is not None:
        keep.mark(out, _normalised, z, mean, invstd, scales)
    return out


def _dropped_taps(kernel: int, dilation: int, size: int) -> int:
    """How many taps at each end of one axis of a k-tap, rate-d, 'same'-padded stride-1 kernel
    only ever read the zero padding of an input ``size`` long: tap i sits (i - (k-1)/2)·d away
    from the output position, and an offset of ``size`` or more leaves the input from every
    position. At search resolution the coarse levels are tiny (2×2 at stride 32 of a 64×64 crop),
    where a 5×5 rate-2 kernel reads the input with its centre tap alone."""
    return max(0, (kernel - 1) // 2 - (size - 1) // dilation)


def _reachable(weight: torch.Tensor, dilation: int, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """``weight`` cut to the taps that can touch an input of ``size``, and the 'same' padding of
    the cut kernel: the convolution's output (and every gradient, the cut taps' being zero) is
    exactly that of the whole kernel, without the multiply-adds of padding."""
    kh, kw = weight.shape[-2:]
    dh, dw = _dropped_taps(kh, dilation, size[0]), _dropped_taps(kw, dilation, size[1])
    if dh or dw:
        weight = weight[..., dh : kh - dh, dw : kw - dw]
    return weight, (dilation * ((kh - 1) // 2 - dh), dilation * ((kw - 1) // 2 - dw))


def _conv(
    x: torch.Tensor, weight: torch.Tensor, groups: int, dilation: int = 1, keep: Recomputation | None = None
) -> torch.Tensor:
    """A 'same'-padded stride-1 grouped convolution of ``x``, run on the taps that can reach it
    (:func:`_reachable`). A grouped 1×1 convolution (of many channels per group) is a batched
    matrix product: CPU convolution backends run it group by group in small kernels, a batched
    GEMM runs it at once (the same sums, in another order). With ``keep``, the copy of the weight
    the batched product multiplies (one per image) is recomputed for backward, not kept."""
    weight, padding = _reachable(weight, dilation, tuple(x.shape[-2:]))
    out_channels, per_group = weight.shape[:2]
    if weight.shape[-2:] != (1, 1) or groups == 1 or per_group == 1:
        return F.conv2d(x, weight, padding=padding, dilation=dilation, groups=groups)
    n, _, h, w = x.shape
    batched = _recomputable(keep, _batched_weight, weight, n, groups)
    out = torch.bmm(batched, _autocast_input(x.reshape(n * groups, per_group, h * w)))
    return out.view(n, out_channels, h, w)


def _batched_weight(weight: torch.Tensor, images: int, groups: int) -> torch.Tensor:
    """A grouped 1×1 convolution's weight as the (images·groups, out/groups, in/groups) batch of
    matrices ``torch.bmm`` multiplies each image's groups by (what ``torch.matmul`` broadcasts to)."""
    out_channels, per_group = weight.shape[:2]
    matrices = weight.reshape(groups, out_channels // groups, per_group)
    return matrices.expand(images, *matrices.shape).reshape(images * groups, out_channels // groups, per_group)


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype autocast gives a convolution's or matrix product's input (``x`` itself
    when autocast is off or leaves it alone): made here rather than inside the op, it is a tensor
    a recipe can cover (autocast's ``cached_cast`` casts floating tensors other than float64)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or not x.is_floating_point() or x.dtype == torch.float64:
        return x
    return x.to(torch.get_autocast_dtype(device))


def _recomputable(keep: Recomputation | None, fn: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
    """``fn(*inputs)``, in the dtype autocast would give a convolution, marked in ``keep`` (when
    given) as recomputable, the cast too: for tensors the block's convolutions keep."""
    out = fn(*inputs) if keep is None else keep.run(fn, *inputs)
    cast = _autocast_input(out)
    if keep is not None and cast is not out:
        keep.mark(cast, _autocast_input, out)
    return cast


def _atrous_kernels(atrous: torch.Tensor, edges: int, op: int) -> torch.Tensor:
    """One atrous op's kernels of every edge, (edges·C, C, k, k), copied out of the interleaved
    [3×3 | 5×5] banks: ``op`` 0 the 3×3 (its 5×5 slot's centre), 1 the 5×5."""
    channels = atrous.shape[1]
    banks = atrous.view(edges, 2, channels, channels, 5, 5)[:, op]
    if op == 0:
        banks = banks[..., 1:4, 1:4]
    return banks.reshape(edges * channels, channels, *banks.shape[-2:])


def _depthwise_pair(x: torch.Tensor, small: torch.Tensor, large: torch.Tensor, halves: bool) -> torch.Tensor:
    """The two separable ops' depthwise convolutions, [3×3 | 5×5] along channels: both of ``x``
    (the first pair), or the 3×3 of ``x``'s first half and the 5×5 of its second (the second)."""
    width = small.shape[0]
    first, second = (x[:, :width], x[:, width:]) if halves else (x, x)
    return torch.cat([_conv(first, small, width), _conv(second, large, width)], dim=1)


class BlockEdges(nn.Module):
    """Every edge into one block of every cell of a node, each edge a mixed op
    Σ_o softmax(α)_o · o(x), run at once.

    The m cells × n input states are stacked along channels and each op runs as one grouped
    convolution (groups = m·n edges) or one per-channel op (depthwise conv, pooling, BatchNorm):
    the same maths as m·n separate mixed ops with their own weights, in m·n times fewer kernel
    launches, which is where a CPU step spends its time at search resolution. The four conv ops
    share their leading ReLU; ``none`` contributes zero and is not computed. Each convolution
    runs only the kernel taps that can reach its input (:func:`_conv`): at the coarse levels of a
    search crop most taps of the 5×5 and rate-2 kernels read padding alone. The ops are those of
    ``segnas.nn.cell_ops`` with ``affine=False`` BatchNorm, as in DARTS.

    With ``partial_channels`` = K > 1, only the first 1/K of each state's channels go through
    the ops; the rest bypass them and the result is channel-shuffled (PC-DARTS).

    With ``recompute`` (exact; see :meth:`forward`) the block keeps for backward only its input
    and the atrous convolutions' output: 3 of the ~14 input-sized tensors the plain graph keeps.
    """

    def __init__(
        self, channels: int, cells: int, inputs: int, partial_channels: int = 1, recompute: bool = False
    ) -> None:
        super().__init__()
        self.cells, self.inputs, self.partial = cells, inputs, partial_channels
        self.recompute = recompute
        self.mixed = channels // partial_channels
        self.edges = cells * inputs
        width = self.edges * self.mixed

        def conv(kernel: int, groups: int) -> nn.Conv2d:  # holds and initialises one op's weights
            return nn.Conv2d(width, width, kernel, groups=groups, bias=False)

        # sep_conv_kxk: twice (depthwise k×k → pointwise → BN); atrous_conv_kxk: k×k rate 2 → BN
        self.sep3 = nn.ModuleList([conv(3, width), conv(1, self.edges), conv(3, width), conv(1, self.edges)])
        self.sep5 = nn.ModuleList([conv(5, width), conv(1, self.edges), conv(5, width), conv(1, self.edges)])
        # both atrous ops' kernels in one tensor: each edge's group outputs its [3×3 | 5×5]
        # channels, the 3×3 kernels sitting in 5×5 slots. The forward reads each op's own taps
        # (the 3×3 slot's centre), never the ring around them, so the ring gets zero gradient under
        # any optimiser and stays zero (weight decay keeps zero at zero); where the input is small
        # enough that the 5×5 op reaches no further than the 3×3 one, the two run as one
        # convolution. Checkpoints keep this layout.
        small, large = conv(3, self.edges).weight, conv(5, self.edges).weight
        kernels = torch.stack(
            [
                F.pad(small, [1] * 4).view(self.edges, self.mixed, self.mixed, 5, 5),
                large.view(self.edges, self.mixed, self.mixed, 5, 5),
            ],
            dim=1,
        )
        self.atrous = nn.Parameter(kernels.reshape(2 * width, self.mixed, 5, 5).detach().clone())
        # per-channel, so one BatchNorm over [3×3 | 5×5] channels is the two ops' own BatchNorms
        self.norms = nn.ModuleList(nn.BatchNorm2d(2 * width, affine=False) for _ in range(3))

    def _atrous(self, relu: torch.Tensor, keep: Recomputation | None = None) -> torch.Tensor:
        """Both atrous ops (rate 2) of every edge: (N, edges·[3×3 | 5×5]·C, H, W). With ``keep``,
        the weight copies the convolutions keep are recomputed for backward."""
        n, _, h, w = relu.shape
        reach = [(_dropped_taps(5, 2, side), _dropped_taps(3, 2, side)) for side in (h, w)]
        if all(large == small + 1 for large, small in reach):  # the 5×5 reaches what the 3×3 does
            return _conv(relu, self.atrous, self.edges, dilation=2, keep=keep)
        width = self.edges * self.mixed
        small, large = (
            _conv(relu, _recomputable(keep, _atrous_kernels, self.atrous, self.edges, op), self.edges, dilation=2)
            for op in (0, 1)
        )
        return torch.stack(
            [small.view(n, self.edges, self.mixed, h, w), large.view(n, self.edges, self.mixed, h, w)], dim=2
        ).view(n, 2 * width, h, w)

    def forward(self, states: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """``states``: n tensors (N, m, C, H, W); ``weights``: the n rows of softmax(α) for
        these edges (shared by the m cells). Returns the block, (N, m, C, H, W).

        Memory: the α-weighted sums of the BatchNorm and pooling outputs are recomputed in the
        backward pass from their inputs (which are kept anyway) instead of being stored. With
        ``recompute``, so are the shared ReLU, and the whole separable branch up to its second
        BatchNorm's input (depthwise, pointwise, BatchNorm, ReLU, depthwise, pointwise), from the
        block's input (``segnas.nn.recompute``): the forward runs once (BatchNorm's running
        statistics are updated once), the backward reruns that branch's forward, and the atrous
        convolutions, the block's costliest ops, keep their output. The plain graph would keep
        about 14 input-sized tensors per block, this one 3 (the memory and time it makes:
        BENCHMARKS.md, "selective recomputation").
        """
        stacked = torch.stack(states, dim=2)  # (N, m, n, C, H, W)
        heads = stacked[:, :, :, : self.mixed] if self.partial > 1 else stacked
        n, m, e, c, h, w = heads.shape
        x = heads.reshape(n, m * e * c, h, w)
        width = x.shape[1]

        def scale(*names: str) -> torch.Tensor:
            """Per-channel α weights (channels ordered cell, edge, channel) of each op in turn."""
            return torch.cat([weights[:, _column(name)].view(1, e, 1).expand(m, e, c).reshape(-1) for name in names])

        first_pointwise = torch.cat([self.sep3[1].weight, self.sep5[1].weight])
        second_pointwise = torch.cat([self.sep3[3].weight, self.sep5[3].weight])
        with Recomputation(self.recompute) as keep:
            # ReLU as threshold: its gradient reads the kept input, where F.relu would keep its output
            cast = _recomputable(keep, F.threshold, x, 0.0, 0.0)
            sep = keep.run(_depthwise_pair, cast, self.sep3[0].weight, self.sep5[0].weight, False)  # [3×3 | 5×5]
            # the pointwise recipe runs without ``keep``: it marks the batched weight in the forward only
            sep = keep.mark(
                _conv(sep, first_pointwise, 2 * self.edges, keep=keep), _conv, sep, first_pointwise, 2 * self.edges
            )
            sep = _norm_scale(self.norms[0], sep, sep.new_ones(sep.shape[1]), keep)
            sep = keep.run(F.threshold, sep, 0.0, 0.0)
            # the second depthwise pair as two convolutions, not one over 3×3 kernels zero-ringed to
            # 5×5: no multiply-adds of the ring, and CPU depthwise backward kernels scale with the taps
            sep = keep.run(_depthwise_pair, sep, self.sep3[2].weight, self.sep5[2].weight, True)
            sep = keep.mark(
                _conv(sep, second_pointwise, 2 * self.edges, keep=keep), _conv, sep, second_pointwise, 2 * self.edges
            )
            atrous = self._atrous(cast, keep)
            atrous_scales = torch.stack(
                [scale("atrous_conv_3x3").view(-1, c), scale("atrous_conv_5x5").view(-1, c)], dim=1
            )
            atrous = _norm_scale(self.norms[2], atrous, atrous_scales.reshape(-1))
            atrous = atrous.view(n, self.edges, 2, c, h, w).sum(2)
            sep = _norm_scale(self.norms[1], sep, scale("sep_conv_3x3", "sep_conv_5x5"))
            total = (
                sep[:, :width]
                + sep[:, width:]
                + atrous.view(n, width, h, w)
                + _PoolMix.apply(x, scale("max_pool_3x3", "avg_pool_3x3", "skip_connect"))
            )
        total = total.reshape(n, m, e, c, h, w).sum(dim=2)
        if self.partial == 1:
            return total
        out = torch.cat([total, stacked[:, :, :, self.mixed :].sum(dim=2)], dim=2)
        channels = out.shape[2]
        if channels % 2:
            return out
        return out.view(n, m, 2, channels // 2, h, w).transpose(2, 3).reshape(n, m, channels, h, w)


class SearchNode(nn.Module):
    """The cells arriving at one trellis node (Eq. 6), computed together.

    Cell j reads H1 from ``sources[j]`` (a level of the previous layer) and the shared H2, has
    its own weights and shares α with every cell; the node is Σ_j β_j · cell_j. Each cell has B
    blocks, block i summing a mixed op over each earlier state, and outputs its blocks
    concatenated.
    """

    def __init__(
        self,
        level: int,
        sources: list[int],
        source_channels: list[int],
        prev_prev_channels: int,
        channels: int,
        blocks: int,
        partial_channels: int = 1,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        self.level, self.sources = level, sources
        self.preprocess1 = nn.ModuleList(ReLUConvBN(c, channels, affine=False) for c in source_channels)
        self.preprocess2 = nn.ModuleList(ReLUConvBN(prev_prev_channels, channels, affine=False) for _ in sources)
        self.edges = nn.ModuleList(
            BlockEdges(channels, len(sources), 2 + block, partial_channels, recompute) for block in range(blocks)
        )

    def forward(
        self,
        h1s: list[torch.Tensor],
        h2: torch.Tensor,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        size: tuple[int, int],
    ) -> torch.Tensor:
        first = []
        for source, h1, project in zip(self.sources, h1s, self.preprocess1):
            if source < self.level:  # from the finer level: downsample first, project at low resolution
                first.append(project(_resize(h1, size)))
            else:
                first.append(_resize(project(h1), size))
        h2 = _resize(h2, size)
        states = [torch.stack(first, dim=1), torch.stack([project(h2) for project in self.preprocess2], dim=1)]
        edge = 0
        for block_edges in self.edges:
            states.append(block_edges(states, alpha[edge : edge + len(states)]))
            edge += len(states) - 1
        cells = torch.cat(states[2:], dim=2)  # (N, m, B·C, H, W)
        return (cells * beta.view(1, -1, 1, 1, 1)).sum(dim=1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SearchHead(nn.Sequential):
    """The search's ASPP at stride s: 1×1, one 3×3 of rate 96/s, image pooling (``channels``
    filters each), then classes."""

    def __init__(self, in_channels: int, num_classes: int, stride: int, channels: int) -> None:
        super().__init__(
            ASPP(in_channels, channels, rates=(96 // stride,), image_pooling=True, dropout=0.0),
            nn.Conv2d(channels, num_classes, 1),
        )


class AutoDeepLabSupernet(nn.Module):
    """Maps images to logits through every cell and transition, weighted by softmax(α), β."""

    def __init__(
        self,
        num_classes: int,
        layers: int = 12,
        filter_multiplier: int = 8,
        blocks: int = 5,
        stem_channels: tuple[int, int] = (64, 128),
        aspp_channels: int | None = None,
        checkpoint_cells: bool = False,
        partial_channels: int = 1,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1 or filter_multiplier < 1 or blocks < 1:
            raise ValueError(
                f"need layers, filter_multiplier, blocks >= 1; got {layers}, {filter_multiplier}, {blocks}"
            )
        if partial_channels < 1 or filter_multiplier % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must divide filter_multiplier={filter_multiplier}")
        self.layers, self.blocks, self.filter_multiplier = layers, blocks, filter_multiplier
        self.checkpoint_cells = checkpoint_cells
        self.stem1 = nn.Sequential(
            nn.Conv2d(3, stem_channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels[0]), nn.ReLU()
        )
        self.stem2 = nn.Sequential(
            nn.Conv2d(stem_channels[0], stem_channels[1], 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_channels[1]),
            nn.ReLU(),
        )
        self.stem_channels = stem_channels
        self.nodes = nn.ModuleDict()
        for layer in range(1, layers + 1):
            for level in range(NUM_LEVELS):
                if not level_exists(layer, level):
                    continue
                sources = self.sources(layer, level)
                self.nodes[self.node_key(layer, level)] = SearchNode(
                    level,
                    sources,
                    [self.node_channels(layer - 1, source) for source in sources],
                    self.node_channels(*self.prev_prev(layer, level)),
                    filter_multiplier * 2**level,
                    blocks,
                    partial_channels,
                    recompute=recompute and not checkpoint_cells,  # the checkpoint's hooks would lose to the block's
                )
        # the paper's head at stride s has the node's width B·F·s/4; an integer fixes one width
        self.heads = nn.ModuleDict(
            {
                str(level): SearchHead(
                    self.node_channels(layers, level),
                    num_classes,
                    4 * 2**level,
                    self.node_channels(layers, level) if aspp_channels is None else aspp_channels,
                )
                for level in range(NUM_LEVELS)
                if level_exists(layers, level)
            }
        )
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(blocks), len(PRIMITIVES)))
        self.beta = nn.Parameter(1e-3 * torch.randn(layers, NUM_LEVELS, len(TRANSITIONS)))

    @staticmethod
    def node_key(layer: int, level: int) -> str:
        return f"{layer}_{level}"

    @staticmethod
    def sources(layer: int, level: int) -> list[int]:
        """Levels of layer-1 with a transition into (layer, level)."""
        return [level - step for step in TRANSITIONS if level_exists(layer - 1, level - step)]

    @staticmethod
    def prev_prev(layer: int, level: int) -> tuple[int, int]:
        """(layer, level) of H2; layer -1 is the stem's stride-2 output (its level is unused)."""
        back = layer - 2
        if back < 0:
            return -1, 0
        return back, min(level, back, NUM_LEVELS - 1)

    def node_channels(self, layer: int, level: int) -> int:
        if layer == -1:
            return self.stem_channels[0]
        if layer == 0:
            return self.stem_channels[1]
        return self.blocks * self.filter_multiplier * 2**level

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        alpha = normalise_alpha(self.alpha)
        beta = normalise_beta(self.beta)
        stride2 = self.stem1(images)
        stem = self.stem2(stride2)
        sizes = [tuple(stem.shape[-2:])]
        for _ in range(NUM_LEVELS - 1):
            sizes.append(halve(sizes[-1]))
        nodes: dict[tuple[int, int], torch.Tensor] = {(-1, 0): stride2, (0, 0): stem}
        for layer in range(1, self.layers + 1):
            for level in range(NUM_LEVELS):
                if not level_exists(layer, level):
                    continue
                node = self.nodes[self.node_key(layer, level)]
                args = (
                    [nodes[(layer - 1, source)] for source in node.sources],
                    nodes[self.prev_prev(layer, level)],
                    alpha,
                    beta[layer - 1, node.sources, [level - source + 1 for source in node.sources]],
                    sizes[level],
                )
                if self.checkpoint_cells and self.training:
                    nodes[(layer, level)] = checkpoint(node, *args, use_reentrant=False)
                else:
                    nodes[(layer, level)] = node(*args)
            for level in range(NUM_LEVELS):  # free what no later cell reads (H2 looks two back)
                nodes.pop((layer - 2, level), None)
        logits = 0
        for level, head in self.heads.items():
            logits = logits + F.interpolate(
                head(nodes[(self.layers, int(level))]), size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits
