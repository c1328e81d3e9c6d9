"""Training the controller from rewards: PPO (default) or REINFORCE, both against an
exponential-moving-average reward baseline.

As in the authors' estimators, the baseline takes the new reward before the advantage is
computed (the first reward sets it, so the first advantage is zero). PPO keeps the last
``buffer_size`` children (decisions, log-probability when sampled, reward) and, at each update,
runs ``epochs`` passes of clipped-surrogate minibatch steps over the buffer, advantages taken
against the current baseline. The defaults are the authors' (nas-segm-pytorch
``src/rl/gradient_estimators.py``: clip 0.1, one epoch, 100 slots split into 100 minibatches, so
one Adam step per buffered child, no entropy term, gradient norm clipped at 2); unlike their
buffer, empty slots are never used as children with reward 0, so the first updates take one step
per child seen so far. REINFORCE takes one step on the newest child.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import torch
from torch import nn

from segnas.searchers.auxcell.controller import Controller, one_thread
from segnas.searchers.auxcell.settings import ControllerSettings, Policy


class PolicyGradient:
    """Shared parts: optimiser (Adam), gradient clipping, baseline, entropy bonus, state."""

    def __init__(
        self,
        controller: Controller,
        lr: float = 1e-4,
        baseline_decay: float = 0.95,
        grad_clip: float = 2.0,
        entropy_coef: float = 0.0,
    ) -> None:
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.baseline_decay = baseline_decay
        self.grad_clip = grad_clip
        self.entropy_coef = entropy_coef
        self.baseline: float | None = None

    def _update_baseline(self, reward: float) -> float:
        if self.baseline is None:
            self.baseline = float(reward)
        else:
            self.baseline = self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * float(reward)
        return self.baseline

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.controller.parameters(), self.grad_clip)
        self.optimizer.step()

    def sample(self, generator: torch.Generator) -> tuple[list[int], float, float]:
        """The next child's decisions, their log-probability and summed entropy."""
        return self.controller.sample(generator)

    def update(self, actions: list[int], log_prob: float, reward: float) -> dict[str, float]:
        """Learn from one child; returns loss, entropy, baseline, advantage and update time."""
        start = time.perf_counter()
        self._update_baseline(reward)
        with one_thread():
            stats = self._learn(actions, log_prob, float(reward))
        return {
            **stats,
            "baseline": float(self.baseline),
            "advantage": float(reward) - float(self.baseline),
            "update_s": time.perf_counter() - start,
        }

    def _learn(self, actions: list[int], log_prob: float, reward: float) -> dict[str, float]:
        losses, entropies = [], []
        for batch in self.minibatches(actions, log_prob, reward):
            new_log_prob, entropy = self.controller(batch["actions"])
            loss = self.loss(new_log_prob, entropy, batch)
            self._step(loss)
            losses.append(loss.item())
            entropies.append(entropy.mean().item())
        return {"loss": sum(losses) / len(losses), "entropy": sum(entropies) / len(entropies)}

    def minibatches(self, actions: list[int], log_prob: float, reward: float) -> list[dict[str, torch.Tensor]]:
        """What one update learns from, after the baseline took ``reward``: one Adam step per
        minibatch, each a dict of ``actions`` (B, T) and the tensors :meth:`loss` reads."""
        raise NotImplementedError

    def loss(self, new_log_prob: torch.Tensor, entropy: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The minibatch's loss, a mean over its last dimension (so a (seeds, B) batch gives one
        loss per seed: :mod:`.lockstep`)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]


class Reinforce(PolicyGradient):
    """loss = -(log π(a) · advantage) - entropy_coef · H, one step per child."""

    def minibatches(self, actions: list[int], log_prob: float, reward: float) -> list[dict[str, torch.Tensor]]:
        return [{"actions": torch.tensor([actions]), "advantage": torch.tensor([reward - self.baseline])}]

    def loss(self, new_log_prob: torch.Tensor, entropy: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return -(new_log_prob * batch["advantage"]).mean(-1) - self.entropy_coef * entropy.mean(-1)


class PPO(PolicyGradient):
    """Clipped surrogate (clip 0.1) over a rolling buffer of the last ``buffer_size`` children."""

    def __init__(
        self,
        controller: Controller,
        clip: float = 0.1,
        buffer_size: int = 100,
        minibatch_size: int = 1,
        epochs: int = 1,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(controller, **kwargs)
        self.clip = clip
        self.buffer: deque[tuple[list[int], float, float]] = deque(maxlen=buffer_size)
        self.minibatch_size = minibatch_size
        self.epochs = epochs
        self.generator = torch.Generator().manual_seed(seed)

    def minibatches(self, actions: list[int], log_prob: float, reward: float) -> list[dict[str, torch.Tensor]]:
        self.buffer.append((list(actions), float(log_prob), float(reward)))
        everything = {
            "actions": torch.tensor([entry[0] for entry in self.buffer]),
            "old_log_prob": torch.tensor([entry[1] for entry in self.buffer]),
            "advantage": torch.tensor([entry[2] for entry in self.buffer]) - self.baseline,
        }
        return [
            {key: value[batch] for key, value in everything.items()}
            for _ in range(self.epochs)
            for batch in torch.randperm(len(self.buffer), generator=self.generator).split(self.minibatch_size)
        ]

    def loss(self, new_log_prob: torch.Tensor, entropy: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ratio = torch.exp(new_log_prob - batch["old_log_prob"])
        surrogate = torch.min(
            ratio * batch["advantage"], ratio.clamp(1.0 - self.clip, 1.0 + self.clip) * batch["advantage"]
        )
        return -surrogate.mean(-1) - self.entropy_coef * entropy.mean(-1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": list(self.buffer), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.clear()
        self.buffer.extend((list(a), float(lp), float(r)) for a, lp, r in state["buffer"])
        self.generator.set_state(state["generator"])


class Uniform(PolicyGradient):
    """Random search (``searcher=random searcher.space=auxcell``): every decision uniform over
    its choices and nothing learnt, so the child loop and its costs are exactly the RL search's.
    The baseline is still tracked so that ``search.csv`` reads the same for both."""

    def sample(self, generator: torch.Generator) -> tuple[list[int], float, float]:
        actions = [int(torch.randint(n, (1,), generator=generator)) for n in self.controller.choices]
        entropy = sum(math.log(n) for n in self.controller.choices)
        return actions, -entropy, entropy

    def _learn(self, actions: list[int], log_prob: float, reward: float) -> dict[str, float]:
        return {"loss": 0.0, "entropy": -float(log_prob)}


def build_policy(
    algorithm: Policy, controller: Controller, settings: ControllerSettings, seed: int = 0
) -> PolicyGradient:
    """The policy ``algorithm`` names (ppo, reinforce or uniform: random search) over
    ``controller``, with the optimiser, baseline and PPO settings of ``settings``. The algorithm
    is an argument of its own so that a replay can run several with the search's other settings
    (the search passes ``settings.algorithm``)."""
    common = {
        "lr": settings.lr,
        "baseline_decay": settings.baseline_decay,
        "grad_clip": settings.grad_clip,
        "entropy_coef": settings.entropy_coef,
    }
    if algorithm == Policy.ppo:
        ppo = settings.ppo
        return PPO(
            controller,
            clip=ppo.clip,
            buffer_size=ppo.buffer_size,
            minibatch_size=ppo.minibatch_size,
            epochs=ppo.epochs,
            seed=seed,
            **common,
        )
    if algorithm == Policy.reinforce:
        return Reinforce(controller, **common)
    if algorithm == Policy.uniform:
        return Uniform(controller, **common)
    raise ValueError(f"controller algorithm {algorithm!r}: expected one of {', '.join(Policy)}")
