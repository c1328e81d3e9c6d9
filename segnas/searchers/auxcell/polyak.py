"""Polyak averaging of a module's parameters (as the authors do it), with its decay scaled to the
epoch's length.

After every optimiser step ``average ← decay · average + (1 - decay) · parameter``, starting
from the parameters the stage began with; at the end of each epoch (and before scoring) the
averages are copied into the module. Buffers (BatchNorm statistics) are not averaged. This is
nas-segm-pytorch's ``init_polyak`` / ``apply_polyak`` (``src/helpers/utils.py``) around
``train_task0`` / ``train_segmenter`` (``src/engine/trainer.py``, decay 0.9 and 0.99).

Once the average is copied in, average and parameters are equal, so every epoch averages from
the weights it starts with: after ``n`` steps those keep ``decay ** n`` of the average. The
authors' epochs are long (62 steps in stage 1, 297 in stage 2), so their averages keep 0.15 %
and 5 % of an epoch's start; a CPU-sized epoch of 8 steps at 0.99 would keep 92 % and stage 2
would barely count. :func:`scaled_decay` therefore takes the decay per step that keeps the
paper's share whatever the epoch's length, and is the decay itself at the paper's length.
"""

from __future__ import annotations

import torch
from torch import nn


def scaled_decay(decay: float, reference_steps: int | None, steps: int) -> float:
    """``decay ** (reference_steps / steps)``: after ``steps`` steps the epoch's starting weights
    keep ``decay ** reference_steps`` of the average, what they keep after the paper's
    ``reference_steps`` at ``decay``. ``reference_steps`` None (or no steps): ``decay`` per step."""
    if reference_steps is None or steps <= 0:
        return decay
    return decay ** (reference_steps / steps)


class PolyakAverage:
    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in module.parameters()]
        self.averages = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        for average, parameter in zip(self.averages, self.parameters):
            average.mul_(self.decay).add_(parameter.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def apply(self) -> None:
        """Replace the module's parameters by their averages (training continues from them)."""
        for average, parameter in zip(self.averages, self.parameters):
            parameter.copy_(average)
