"""The per-step lr schedules, warm-up included (fine-tuning's: issue 16, section 2)."""

from __future__ import annotations

import math

import pytest
import torch

from segnas.training.schedules import build_schedule


def lrs(name: str, total: int, warmup: int = 0, lr: float = 1.0, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = build_schedule(optimizer, name, total, warmup_steps=warmup, **kwargs)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return seen


def test_poly_and_cosine_without_warm_up_are_unchanged() -> None:
    assert lrs("poly", 10) == pytest.approx([(1 - t / 10) ** 0.9 for t in range(10)])
    assert lrs("cosine", 10) == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])


def test_warm_up_ramps_linearly_then_runs_the_shape_over_the_rest() -> None:
    seen = lrs("cosine", 12, warmup=2, lr=0.5)
    assert seen[:2] == pytest.approx([0.25, 0.5])  # (step + 1) / warmup of the lr
    assert seen[2:] == pytest.approx([0.5 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])
    assert lrs("constant", 5, warmup=4) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
