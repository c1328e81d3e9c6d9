"""The LSTM controller that proposes decoders, one decision at a time.

A 2-layer LSTM (100 units, as the paper): a few warm-up steps on a learned start input (the
authors run one per encoder map), then one step per decision; each decision has its own linear
head over its choices. Unlike the authors' controller, which feeds the LSTM its own previous
output, the next step here reads an embedding of the decision just taken, so later decisions are
conditioned on earlier ones (as in ENAS). :meth:`Controller.forward` recomputes the
log-probability of whole sequences in one batched pass (teacher forcing): a PPO update over a
full buffer of 100 children in minibatches of 10 takes about 0.4 s on 2 shared CPU cores, the
authors' 100 single-child steps (the default) about 3 s.

The LSTM is :class:`LSTM`, ``nn.LSTM``'s maths and parameters in plain tensor ops, because
``torch.func.vmap`` has no batching rule for ``aten::lstm``: with it, a replay runs hundreds of
seeds' controllers as one (:mod:`.lockstep`, through ``torch.func.functional_call``), and the
search itself is the same module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the controller's many tiny ops on one thread: thread hand-offs cost more than the ops
    (faster than two threads on the project's 2-core machines), and the children get their
    threads back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Recurrence(torch.autograd.Function):
    """One LSTM layer's recurrence over T steps from its projected inputs (T, B, 4H), h0 and c0
    (B, H) and the recurrent weight (4H, H): (outputs (T, B, H), last cell state, and what the
    backward pass reads).

    Why by hand: autograd would accumulate the recurrent weight's gradient as one outer product
    per step, which dominates a PPO step on a CPU (and grows with the seeds a replay stacks);
    here backpropagation through time collects every step's gate gradients and takes the
    weight's gradient in one product. The maths is autograd's (tested against ``nn.LSTM``'s
    gradients); ``generate_vmap_rule`` lets ``torch.func.vmap`` batch it over controllers."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        projected: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        size = h.shape[-1]
        outputs, activations, cells = [], [], [c]
        for step in range(projected.shape[0]):
            gates = projected[step] + h @ weight.t()
            sig = torch.sigmoid(gates)
            g = torch.tanh(gates[..., 2 * size : 3 * size])
            c = sig[..., size : 2 * size] * c + sig[..., :size] * g
            h = sig[..., 3 * size :] * torch.tanh(c)
            outputs.append(h)
            activations.append(torch.cat([sig[..., : 2 * size], g, sig[..., 3 * size :]], dim=-1))
            cells.append(c)
        return torch.stack(outputs), c, torch.stack(activations), torch.stack(cells)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        _, h0, _, weight = inputs
        outputs, _, activations, cells = output
        ctx.save_for_backward(h0, weight, outputs, activations, cells)
        ctx.mark_non_differentiable(activations, cells)

    @staticmethod
    def backward(
        ctx: Any, grad_outputs: torch.Tensor, grad_c: torch.Tensor, *_: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h0, weight, outputs, activations, cells = ctx.saved_tensors
        size = h0.shape[-1]
        dh, dc = torch.zeros_like(h0), grad_c
        grad_gates = []
        for step in reversed(range(outputs.shape[0])):
            i, f, g, o = activations[step].split(size, dim=-1)
            dh = dh + grad_outputs[step]
            tanh_c = torch.tanh(cells[step + 1])
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            gate = torch.cat(
                [dc * g * i * (1 - i), dc * cells[step] * f * (1 - f), dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)],
                dim=-1,
            )
            dc = dc * f
            dh = gate @ weight
            grad_gates.append(gate)
        grad_projected = torch.stack(grad_gates[::-1])
        previous = torch.cat([h0.unsqueeze(0), outputs[:-1]])
        grad_weight = grad_projected.flatten(0, -2).t() @ previous.flatten(0, -2)
        return grad_projected, dh, dc, grad_weight


class LSTM(nn.Module):
    """A multi-layer LSTM with ``nn.LSTM``'s gates (i, f, g, o), parameter names and order, so
    state dicts load either way and a seed initialises the same weights; (T, B, F) inputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        for layer in range(self.num_layers):
            width = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, width)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))

    def forward(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(outputs (T, B, H), (h, c) each (layers, B, H)), as ``nn.LSTM``."""
        if state is None:
            zeros = inputs.new_zeros(self.num_layers, inputs.shape[1], self.hidden_size)
            state = (zeros, zeros)
        hiddens, cells = [], []
        for layer in range(self.num_layers):
            # the input projection of every step (with both biases) in one product; only the
            # recurrence is step by step (:class:`_Recurrence`)
            projected = F.linear(
                inputs,
                getattr(self, f"weight_ih_l{layer}"),
                getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}"),
            )
            inputs, c, _, _ = _Recurrence.apply(
                projected, state[0][layer], state[1][layer], getattr(self, f"weight_hh_l{layer}")
            )
            hiddens.append(inputs[-1])
            cells.append(c)
        return inputs, (torch.stack(hiddens), torch.stack(cells))


class Controller(nn.Module):
    """Samples decision sequences and scores them; parameters initialised in ±0.1 (as ENAS) from
    their own ``seed``, so the initial controller depends on nothing built before it."""

    def __init__(
        self, choices: Sequence[int], hidden_size: int = 100, num_layers: int = 2, warmup_steps: int = 4, seed: int = 0
    ) -> None:
        super().__init__()
        self.choices = list(choices)
        self.warmup_steps = warmup_steps
        self.lstm = LSTM(hidden_size, hidden_size, num_layers)
        self.start = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.embed = nn.Embedding(sum(self.choices), hidden_size)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, c) for c in self.choices)
        self.register_buffer("offsets", torch.tensor([0, *self.choices[:-1]]).cumsum(0), persistent=False)
        generator = torch.Generator().manual_seed(seed)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -0.1, 0.1, generator=generator)

    def _warmup(self, batch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        inputs, state = self.start.expand(1, batch, -1), None
        for _ in range(self.warmup_steps):
            inputs, state = self.lstm(inputs, state)
        return inputs, state

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> tuple[list[int], float, float]:
        """One sequence, its log-probability and the summed entropy of its decisions."""
        with one_thread():
            return self._sample(generator)

    def _sample(self, generator: torch.Generator | None) -> tuple[list[int], float, float]:
        inputs, state = self._warmup(1)
        actions: list[int] = []
        log_prob = entropy = 0.0
        for step, head in enumerate(self.heads):
            output, state = self.lstm(inputs, state)
            logp = F.log_softmax(head(output[0, 0]), dim=-1)
            action = int(torch.multinomial(logp.exp(), 1, generator=generator))
            actions.append(action)
            log_prob += float(logp[action])
            entropy -= float((logp.exp() * logp).sum())
            inputs = self.embed(self.offsets[step] + torch.tensor([[action]]))
        return actions, log_prob, entropy

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities and entropies (each (B,)) of a (B, T) batch of decision sequences."""
        batch = actions.shape[0]
        first, state = self._warmup(batch)
        taken = self.embed(self.offsets[:-1] + actions[:, :-1]).transpose(0, 1)
        outputs, _ = self.lstm(torch.cat([first, taken], dim=0), state)
        log_prob = outputs.new_zeros(batch)
        entropy = outputs.new_zeros(batch)
        for step, head in enumerate(self.heads):
            logp = F.log_softmax(head(outputs[step]), dim=-1)
            log_prob = log_prob + logp.gather(1, actions[:, step : step + 1]).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(1)
        return log_prob, entropy
