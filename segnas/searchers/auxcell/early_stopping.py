"""Progressive early stopping: a child goes on to stage 2 only if its stage-1 reward is close
enough to a running average of earlier children's stage-1 rewards.

The rule of the paper and the authors' ``TaskPerformer``: the running average (start 0.01)
first takes the new reward with decay 0.99; a reward above it passes; otherwise it passes only if
it beats ``average × (1 - u)``, ``u`` drawn uniformly from ``[0, tolerance)``. The tolerance
(start 0.9) shrinks by the factors of ``schedule`` after that many checks, so the search gets
stricter as the average firms up. Unlike the authors' class, which counts some checks twice and
can step over a schedule entry, each check counts once here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class ProgressiveStopper:
    """``step(reward) -> bool``: continue training this child?"""

    def __init__(
        self,
        initial: float = 0.01,
        tolerance: float = 0.9,
        decay: float = 0.99,
        schedule: Mapping[int, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.average = initial
        self.tolerance = tolerance
        self.decay = decay
        self.schedule = {int(k): float(v) for k, v in (schedule or {100: 0.9, 200: 0.8, 300: 0.7, 400: 0.6}).items()}
        self.checks = 0
        self.rng = np.random.default_rng(seed)

    def step(self, reward: float) -> bool:
        self.tolerance *= self.schedule.get(self.checks, 1.0)
        self.checks += 1
        self.average = self.decay * self.average + (1.0 - self.decay) * float(reward)
        if reward > self.average:
            return True
        return bool(reward > self.average * (1.0 - self.rng.uniform(0.0, self.tolerance)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "average": self.average,
            "tolerance": self.tolerance,
            "checks": self.checks,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average, self.tolerance, self.checks = state["average"], state["tolerance"], state["checks"]
        self.rng.bit_generator.state = state["rng"]
