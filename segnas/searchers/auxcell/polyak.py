"""Polyak averaging of a module's parameters (as the authors do it).

After every optimiser step ``average ← decay · average + (1 - decay) · parameter``, starting
from the parameters the stage began with; at the end of each epoch (and before scoring) the
averages are copied into the module. Buffers (BatchNorm statistics) are not averaged.
"""

from __future__ import annotations

import torch
from torch import nn


class PolyakAverage:
    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = float(decay)
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
