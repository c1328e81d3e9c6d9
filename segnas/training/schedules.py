"""Per-step learning-rate schedules sized from the trainer's total step count."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from segnas.errors import ConfigError
from segnas.settings.run import Schedule


def build_schedule(
    optimizer: Optimizer,
    name: str,
    total_steps: int,
    power: float = 0.9,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
) -> LRScheduler:
    """``poly``: DeepLab's (1 - t/T)^power; ``cosine``: SGDR without restarts; both end at min_lr.
    ``warmup_steps`` > 0 ramps the lr linearly from lr/warmup to lr over those first steps and
    runs the shape over the rest (fine-tuning inherited weights: a full lr at step 0 undoes them).

    Written as multiplicative factors of each group's initial lr, so partial optimisers with
    several parameter groups (e.g. encoder and decoder learning rates) decay together.
    """
    if name not in tuple(Schedule):
        raise ConfigError(f"train.scheduler={name}: expected one of {', '.join(Schedule)}")
    total_steps = max(int(total_steps), 1)
    warmup = min(max(int(warmup_steps), 0), total_steps - 1)
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(base_lr: float):
        floor = min(min_lr / base_lr, 1.0) if base_lr > 0 else 0.0

        def at(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / (total_steps - warmup), 1.0)
            if name == "poly":
                shape = (1.0 - progress) ** power
            elif name == "cosine":
                shape = 0.5 * (1.0 + math.cos(math.pi * progress))
            else:
                return 1.0
            return floor + (1.0 - floor) * shape

        return at

    return LambdaLR(optimizer, [factor(lr) for lr in base_lrs])
