"""Many seeds' controller searches updated as one, for replays (:func:`segnas.tables.auxcell.replay`).

A replay of PPO over 200 seeds and 100 children is about a million single-child Adam steps (the
authors' minibatch of 1: one step per buffered child at every update); one seed at a time that is
hours of tiny ops on a CPU. Here the seeds' controllers keep their own parameters, but as views
into one stacked tensor per parameter, so one ``torch.func.vmap`` of the controller's own
``forward`` and one Adam step move every seed at once. Everything else is each seed's own policy
object: its baseline, PPO buffer and minibatch order (:meth:`~.policy.PolicyGradient.minibatches`)
and its loss (:meth:`~.policy.PolicyGradient.loss`). What is rewritten for the stack is only
what cannot be shared across seeds as written, and it follows torch's maths:

- gradient clipping by each seed's own total norm (``clip_grad_norm_``: coefficient
  ``max_norm / (norm + 1e-6)``, at most 1);
- Adam on the stacked tensors, elementwise and so each seed's own Adam (all seeds step together).

``tests/test_controller.py`` checks that seeds run this way sample the same children and end with
the same parameters as each seed's policy run alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import functional_call, vmap

from segnas.searchers.auxcell.controller import one_thread
from segnas.searchers.auxcell.policy import PolicyGradient, Uniform


def _settings(policy: PolicyGradient) -> dict[str, object]:
    """A policy's hyperparameters (not its state), for checking that seeds can share one stack."""
    values = {k: v for k, v in vars(policy).items() if k != "baseline" and isinstance(v, (int, float, str))}
    group = policy.optimizer.param_groups[0]
    buffer = getattr(policy, "buffer", None)
    return {
        **values,
        **{k: group[k] for k in ("lr", "betas", "eps", "weight_decay")},
        "buffer_size": buffer.maxlen if buffer is not None else None,
    }


class Lockstep:
    """Seeds' policies of one kind and settings, updated together after each child."""

    def __init__(self, policies: Sequence[PolicyGradient]) -> None:
        self.policies = list(policies)
        template = self.policies[0]
        for policy in self.policies:
            if type(policy) is not type(template) or _settings(policy) != _settings(template):
                raise ValueError("Lockstep: every seed's policy must be of one kind with the same settings")
        self.learns = not isinstance(template, Uniform)
        self.template = template
        names = [name for name, _ in template.controller.named_parameters()]
        self.stacked = {
            name: torch.stack(
                [dict(p.controller.named_parameters())[name].detach() for p in self.policies]
            ).requires_grad_()
            for name in names
        }
        for index, policy in enumerate(self.policies):
            for name, parameter in policy.controller.named_parameters():
                parameter.data = self.stacked[name].data[index]  # a view: each seed samples from the stack
        group = template.optimizer.param_groups[0]
        self.optimizer = torch.optim.Adam(
            self.stacked.values(),
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            fused=True,
        )

    def _evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def one(parameters: dict[str, torch.Tensor], seed_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return functional_call(self.template.controller, parameters, (seed_actions,))

        return vmap(one)(self.stacked, actions)

    def _clip(self) -> None:
        grads = [p.grad for p in self.stacked.values()]
        norms = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0
        )
        coefficient = (self.template.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(coefficient.view(-1, *[1] * (grad.dim() - 1)))

    def update(self, actions: Sequence[list[int]], log_probs: Sequence[float], rewards: Sequence[float]) -> None:
        """Each seed learns from its newest child, as its own ``policy.update`` would."""
        if not self.learns:
            for policy, a, lp, r in zip(self.policies, actions, log_probs, rewards):
                policy.update(a, lp, r)
            return
        plans = []
        for policy, a, lp, r in zip(self.policies, actions, log_probs, rewards):
            policy._update_baseline(r)
            plans.append(policy.minibatches(a, lp, float(r)))
        with one_thread():
            for steps in zip(*plans, strict=True):
                batch = {key: torch.stack([step[key] for step in steps]) for key in steps[0]}
                new_log_prob, entropy = self._evaluate(batch["actions"])
                self.optimizer.zero_grad()
                self.template.loss(new_log_prob, entropy, batch).sum().backward()
                self._clip()
                self.optimizer.step()
