"""Spawned ranks must own their tensors.

``ddp_spawn`` (and ``ddp_fork``) send the LightningModule to each rank through
``torch.multiprocessing``. Its registered parameters arrive as private copies, but a CPU tensor it
holds anywhere else (a search's controller inside its policy object, the FMAS supernet kept
outside the registered children) arrives in shared memory: every rank, and the launching process,
then hold the *same* storage, and each rank's optimiser steps or BatchNorm recalibrations write
into the others' (measured on 2 CPU ranks: the controllers diverged after the first round). On a
GPU the move to the rank's device makes private copies; on the CPU nothing does, so a search
module copies what it holds when it is set up.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def own_tensors(module: nn.Module) -> int:
    """Give every shared-memory parameter and buffer of ``module`` a private copy, in place (the
    same Parameter objects, so an optimiser over them still holds them); returns how many."""
    copied = 0
    for parameter in module.parameters():
        if parameter.is_shared():
            parameter.data = parameter.data.clone()
            copied += 1
    for owner in module.modules():
        for name, buffer in owner._buffers.items():
            if buffer is not None and buffer.is_shared():
                owner._buffers[name] = buffer.clone()
                copied += 1
    return copied


def own_tensors_of(*modules: Any) -> int:
    """:func:`own_tensors` for each network in ``modules`` (anything else is skipped)."""
    return sum(own_tensors(module) for module in modules if isinstance(module, nn.Module))
