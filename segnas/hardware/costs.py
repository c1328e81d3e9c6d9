"""Static costs of a built network: parameters and multiply-accumulates."""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

aten = torch.ops.aten

#: The conventions :func:`count_macs` knows.
MAC_CONVENTIONS = ("torch", "tfprof")


def _tf_conv_flops(
    x_shape: Any,
    w_shape: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """A convolution as TensorFlow 1.x runs and profiles it. A dilated convolution goes through
    SpaceToBatchND (nn_ops.py ``_WithSpaceToBatch``), whose grid is padded up to a multiple of
    the rate (array_ops.py ``required_space_to_batch_paddings``), and tfprof counts its Conv2D
    on that grid (2 FLOPs per multiply-accumulate); the bias is a BiasAdd, 1 FLOP per output."""
    if transposed:
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=True)
    batch, out_channels, *spatial = out_shape
    grid = math.prod(math.ceil(size / rate) * rate for size, rate in zip(spatial, dilation))
    flops = 2 * batch * grid * out_channels * math.prod(w_shape[1:])
    return flops + (math.prod(out_shape) if bias is not None else 0)


def _tf_pool_flops(x_shape: Any, kernel_size: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """tfprof's AvgPool / MaxPool: kernel area · output elements (flops_registry.py ``_pool_flops``)."""
    values = out_shape[0] if isinstance(out_shape[0], (tuple, list, torch.Size)) else out_shape
    return math.prod(kernel_size) * math.prod(values)


def _tf_input_flops(x_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """A global average (DeepLab's image pooling is an AvgPool over the whole map): one FLOP
    per input element."""
    return math.prod(x_shape)


def _tf_elementwise_flops(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """tfprof's Add: one FLOP per output element."""
    return math.prod(out_shape)


#: What tfprof counts that FlopCounterMode does not, or counts otherwise. BatchNorm (fused),
#: ReLU and bilinear resizing cost 0 in both.
_TFPROF = {
    aten.convolution: _tf_conv_flops,
    aten._convolution: _tf_conv_flops,
    aten.avg_pool2d: _tf_pool_flops,
    aten.max_pool2d: _tf_pool_flops,
    aten.max_pool2d_with_indices: _tf_pool_flops,
    aten.mean: _tf_input_flops,
    aten._adaptive_avg_pool2d: _tf_input_flops,
    aten.add: _tf_elementwise_flops,
}


def count_params(model: nn.Module) -> int:
    """Every parameter, trainable and frozen alike (buffers such as BN statistics excluded).

    Frozen weights still have to be stored and executed on the target, so they count towards
    the model's size.
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(
    model: nn.Module,
    input_size: tuple[int, int],
    batch: int = 1,
    in_channels: int = 3,
    convention: str = "torch",
) -> int:
    """Multiply-accumulates of one eval-mode forward pass, as FLOPs // 2.

    ``convention="torch"`` (what every cost in segnas is): FLOPs from
    ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products and convolutions
    (2 FLOPs per multiply-accumulate) and nothing else: BatchNorm, activations, pooling and
    interpolation cost 0, and biases are not counted.

    ``convention="tfprof"``: the "Multiply-Adds" that papers from TensorFlow 1.x report (DeepLab's
    model zoo, Auto-DeepLab's Table 2), tfprof's float_ops / 2 for the same network run as
    TensorFlow runs it: dilated convolutions over SpaceToBatchND's padded grid, plus one FLOP per
    element added (Add, BiasAdd) and per pooling-window element. It exists to compare against
    such numbers, not to rank networks: the padding is work a PyTorch network does not do.

    The model runs on its own device (``meta`` works) under ``no_grad`` and is put back in the
    train/eval mode it was in.
    """
    return count_macs_by_convention(model, input_size, batch, in_channels, (convention,))[convention]


def count_macs_by_convention(
    model: nn.Module,
    input_size: tuple[int, int],
    batch: int = 1,
    in_channels: int = 3,
    conventions: tuple[str, ...] = MAC_CONVENTIONS,
) -> dict[str, int]:
    """:func:`count_macs` in each of ``conventions`` from one forward pass (one counter each,
    nested: every counter sees every op), so a large input is run once."""
    unknown = sorted(set(conventions) - set(MAC_CONVENTIONS))
    if unknown:
        raise ValueError(f"MAC convention(s) {unknown}: expected some of {MAC_CONVENTIONS}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    x = torch.zeros(batch, in_channels, *input_size, device=device, dtype=dtype)
    counters = {
        name: FlopCounterMode(display=False, custom_mapping=_TFPROF if name == "tfprof" else None)
        for name in conventions
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), ExitStack() as stack:
            for counter in counters.values():
                stack.enter_context(counter)
            model(x)
    finally:
        model.train(was_training)
    return {name: counter.get_total_flops() // 2 for name, counter in counters.items()}


def _conv_backward_flops(
    grad_out_shape: Any,
    x_shape: Any,
    w_shape: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    output_mask: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """A convolution's backward: the input gradient (a transposed convolution of the output
    gradient with the weights) and the weight gradient (each weight's products summed over the
    batch and positions) each do the forward's multiply-accumulates, grouped or not.

    torch's own formula (torch/utils/flop_counter.py ``conv_backward_flop``, torch 2.14) ignores
    ``groups`` for the weight gradient, so a depthwise convolution's backward counts ``channels``
    times its work: a MobileNet or Auto-DeepLab training step reads ~70x its forward instead of
    ~3x (pytorch/pytorch#183405 proposes the same division by groups).
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_training_flops(step: Any) -> int:
    """FLOPs of ``step()`` (a forward and backward, or a whole optimiser step) as
    ``FlopCounterMode`` counts them (matrix products and convolutions, 2 per multiply-accumulate),
    the convolution backward counted with its groups (:func:`_conv_backward_flops`): the work a
    training step must do, the numerator of a benchmark's utilisation."""
    counter = FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: _conv_backward_flops})
    with counter:
        step()
    return counter.get_total_flops()
