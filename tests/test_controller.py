"""The auxcell controller and its policy-gradient training (PPO, REINFORCE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.controller import Controller
from segnas.searchers.auxcell.policy import PPO, Reinforce
from segnas.spaces.auxcell import AuxCellSpace

CHOICES = decisions.choices()
TARGET = [c - 1 for c in CHOICES]  # an arbitrary fixed decision per step


def toy_reward(actions: list[int]) -> float:
    return sum(a == t for a, t in zip(actions, TARGET)) / len(TARGET)


def expected_toy_reward(controller: Controller, samples: int = 100) -> float:
    generator = torch.Generator().manual_seed(123)
    return sum(toy_reward(controller.sample(generator)[0]) for _ in range(samples)) / samples


def test_decision_layout_matches_the_authors_controller() -> None:
    # connections: pools of 4, 4, 5, 5, 6, 6; the first op; per layer 2, 5, 8 positions and 11 ops
    assert CHOICES == [4, 4, 5, 5, 6, 6, 11, 2, 2, 11, 11, 5, 5, 11, 11, 8, 8, 11, 11]


def test_every_sample_is_a_valid_genotype_and_round_trips() -> None:
    torch.manual_seed(0)
    controller = Controller(CHOICES)
    generator = torch.Generator().manual_seed(0)
    space = AuxCellSpace()
    for _ in range(30):
        actions, _, _ = controller.sample(generator)
        arch = space.validate(decisions.to_arch(actions))
        assert decisions.from_arch(arch) == actions


def test_log_probability_of_a_sample_equals_a_recomputation_from_logits() -> None:
    torch.manual_seed(1)
    controller = Controller(CHOICES)
    actions, log_prob, entropy = controller.sample(torch.Generator().manual_seed(5))
    batched_log_prob, batched_entropy = controller(torch.tensor([actions, actions]))
    torch.testing.assert_close(batched_log_prob, torch.full((2,), log_prob), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched_entropy, torch.full((2,), entropy), atol=1e-4, rtol=0)
    # step by step, by hand, from the raw LSTM and heads
    with torch.no_grad():
        inputs, state = controller.start, None
        for _ in range(controller.warmup_steps):
            inputs, state = controller.lstm(inputs, state)
        manual = 0.0
        offset = 0
        for step, (head, action) in enumerate(zip(controller.heads, actions)):
            output, state = controller.lstm(inputs, state)
            manual += float(F.log_softmax(head(output[0, 0]), -1)[action])
            inputs = controller.embed(torch.tensor([[offset + action]]))
            offset += CHOICES[step]
    assert manual == pytest.approx(log_prob, abs=1e-5)


def test_baseline_is_an_exponential_moving_average() -> None:
    agent = Reinforce(Controller(CHOICES), baseline_decay=0.95)
    generator = torch.Generator().manual_seed(0)
    expected = None
    for reward in (0.2, 0.6, 0.4):
        actions, log_prob, _ = agent.controller.sample(generator)
        stats = agent.update(actions, log_prob, reward)
        expected = reward if expected is None else 0.95 * expected + 0.05 * reward
        assert stats["baseline"] == pytest.approx(expected)
        assert stats["advantage"] == pytest.approx(reward - expected)


def test_a_ppo_update_moves_probability_toward_the_better_action() -> None:
    torch.manual_seed(2)
    controller = Controller(CHOICES)
    agent = PPO(controller, lr=1e-3, minibatch_size=2)
    generator = torch.Generator().manual_seed(3)
    good, good_lp, _ = controller.sample(generator)
    bad, bad_lp, _ = controller.sample(generator)
    agent.update(bad, bad_lp, 0.0)  # baseline 0, advantage 0: no change in expectation
    before, _ = controller(torch.tensor([good, bad]))
    agent.update(good, good_lp, 1.0)  # baseline 0.05: good +0.95, bad -0.05
    after, _ = controller(torch.tensor([good, bad]))
    assert after[0] > before[0] and (after[0] - after[1]) > (before[0] - before[1])


@pytest.mark.parametrize(("algorithm", "kwargs"), [(PPO, {"buffer_size": 20, "minibatch_size": 10}), (Reinforce, {})])
def test_policy_gradient_improves_the_expected_toy_reward(algorithm, kwargs) -> None:
    torch.manual_seed(0)
    controller = Controller(CHOICES)
    agent = algorithm(controller, lr=5e-3, **kwargs)
    before = expected_toy_reward(controller)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        actions, log_prob, _ = controller.sample(generator)
        agent.update(actions, log_prob, toy_reward(actions))
    after = expected_toy_reward(controller)
    assert before < 0.25 and after > before + 0.3, (before, after)


def test_resumed_agent_continues_with_the_same_next_sample_and_update() -> None:
    def run(agent: PPO, generator: torch.Generator, n: int) -> list[list[int]]:
        out = []
        for _ in range(n):
            actions, log_prob, _ = agent.controller.sample(generator)
            agent.update(actions, log_prob, toy_reward(actions))
            out.append(actions)
        return out

    torch.manual_seed(0)
    straight = PPO(Controller(CHOICES), lr=1e-2, minibatch_size=2)
    generator = torch.Generator().manual_seed(9)
    reference = run(straight, generator, 6)

    torch.manual_seed(0)
    first = PPO(Controller(CHOICES), lr=1e-2, minibatch_size=2)
    generator = torch.Generator().manual_seed(9)
    head = run(first, generator, 3)
    state, sampler = first.state_dict(), generator.get_state()
    torch.manual_seed(1)  # a different init, overwritten by the state
    second = PPO(Controller(CHOICES), lr=1e-2, minibatch_size=2)
    second.load_state_dict(state)
    generator = torch.Generator()
    generator.set_state(sampler)
    assert head + run(second, generator, 3) == reference


def test_the_controllers_lstm_is_torchs_lstm() -> None:
    # the controller's LSTM is written in plain ops (so torch.func.vmap can batch controllers); it must
    # be nn.LSTM's maths with nn.LSTM's parameters, so runs and checkpoints made with nn.LSTM carry on
    torch.manual_seed(0)
    ours = Controller(CHOICES, hidden_size=12, num_layers=2).lstm
    reference = torch.nn.LSTM(12, 12, 2)
    reference.load_state_dict(ours.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    inputs = torch.randn(5, 3, 12)
    state = (torch.randn(2, 3, 12), torch.randn(2, 3, 12))
    for given in (None, state):
        out, (h, c) = ours(inputs, given)
        ref_out, (ref_h, ref_c) = reference(inputs, given)
        for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # gradients (the backward pass is written by hand) of the parameters, the inputs and the given
    # state, through the outputs and both returned states
    inputs.requires_grad_()
    state = tuple(t.requires_grad_() for t in state)

    def loss(out: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return out.square().sum() + (h * 0.5).sum() + c.pow(3).sum()

    wrt = [inputs, *state]
    grads = torch.autograd.grad(loss(*(lambda o, s: (o, *s))(*ours(inputs, state))), [*ours.parameters(), *wrt])
    ref_grads = torch.autograd.grad(
        loss(*(lambda o, s: (o, *s))(*reference(inputs, state))), [*reference.parameters(), *wrt]
    )
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("algorithm", "kwargs"),
    [
        ("ppo", {"buffer_size": 4, "minibatch_size": 1, "epochs": 2}),
        ("ppo", {"buffer_size": 6, "minibatch_size": 3, "epochs": 1}),
        ("reinforce", {}),
    ],
)
def test_lockstep_seeds_follow_each_seeds_own_policy(algorithm, kwargs) -> None:
    from segnas.searchers.auxcell.lockstep import Lockstep
    from segnas.searchers.auxcell.policy import build_policy
    from segnas.searchers.auxcell.settings import ControllerSettings, Policy, PPOSettings

    settings = ControllerSettings(
        lr=5e-2,
        baseline_decay=0.9,
        grad_clip=0.05,
        entropy_coef=0.01,
        ppo=PPOSettings(**{"clip": 0.1, "buffer_size": 100, "minibatch_size": 1, "epochs": 1, **kwargs}),
    )
    seeds = [0, 1, 2]

    def policies():
        # in float64, so that what is compared is the maths: in float32 the batched products' other
        # summation order gives ~1e-7 differences that Adam's normalised steps grow to ~1e-4
        return [
            build_policy(Policy(algorithm), Controller(CHOICES, 16, 2, seed=s).double(), settings, seed=s)
            for s in seeds
        ]

    def reward(actions: list[int], seed: int) -> float:
        return toy_reward(actions) + 0.1 * seed

    alone, together = policies(), policies()
    lockstep = Lockstep(together)
    samplers = {
        "alone": [torch.Generator().manual_seed(s) for s in seeds],
        "together": [torch.Generator().manual_seed(s) for s in seeds],
    }
    for _ in range(8):
        drawn_alone = [p.sample(g)[:2] for p, g in zip(alone, samplers["alone"])]
        for policy, (actions, log_prob), seed in zip(alone, drawn_alone, seeds):
            policy.update(actions, log_prob, reward(actions, seed))
        drawn = [p.sample(g)[:2] for p, g in zip(together, samplers["together"])]
        assert [a for a, _ in drawn] == [a for a, _ in drawn_alone]
        lockstep.update(
            [a for a, _ in drawn], [lp for _, lp in drawn], [reward(a, s) for (a, _), s in zip(drawn, seeds)]
        )
    for one, other, seed in zip(alone, together, seeds):
        assert one.baseline == pytest.approx(other.baseline)
        start = Controller(CHOICES, 16, 2, seed=seed).double()
        with torch.no_grad():
            moved = max(float((a - b).abs().max()) for a, b in zip(one.controller.parameters(), start.parameters()))
            worst = max(
                float((a - b).abs().max()) for a, b in zip(one.controller.parameters(), other.controller.parameters())
            )
        assert moved > 1e-2 and worst < 1e-9 * moved, (moved, worst)
