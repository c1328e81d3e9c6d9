"""Static costs of a built network: parameters and multiply-accumulates."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Every parameter, trainable and frozen alike (buffers such as BN statistics excluded).

    Frozen weights still have to be stored and executed on the target, so they count towards
    the model's size.
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(
    model: nn.Module, input_size: tuple[int, int], batch: int = 1, in_channels: int = 3
) -> int:
    """Multiply-accumulates of one eval-mode forward pass, as FLOPs // 2.

    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products
    and convolutions (2 FLOPs per multiply-accumulate) and nothing else: BatchNorm, activations,
    pooling and interpolation cost 0, and biases are not counted. The model runs on its own device
    under ``no_grad`` and is put back in the train/eval mode it was in.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    x = torch.zeros(batch, in_channels, *input_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
