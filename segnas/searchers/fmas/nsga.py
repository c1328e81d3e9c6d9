"""NSGA-II (pymoo) driven by ask/tell, one generation at a time, resumable after any generation.

pymoo only proposes integer vectors; decoding, pricing and scoring stay in segnas (the
:class:`~segnas.searchers.fmas.evaluator.Evaluator` and its cache), so no sub-network is
scored twice even when NSGA-II proposes it again in a later generation (pymoo de-duplicates
within a population only). Limits (``max_macs``...) are one inequality constraint: the summed
relative excess, so NSGA-II ranks rejected candidates behind every feasible one.

:class:`SearchState` holds the pickled algorithm (population, its own random generator), the
cache of records and the generation counter, which is all the state a resumed search needs to
propose exactly the sequence the uninterrupted search would have; it travels in the search
module's Lightning checkpoint.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem

from segnas.errors import ConfigError
from segnas.searchers.fmas.encoding import Encoding
from segnas.searchers.fmas.evaluator import Evaluator, SubnetRecord
from segnas.searchers.fmas.pareto import front_records, hypervolume, objective_matrix
from segnas.searchers.fmas.settings import Proposals


class FrontRecord(SubnetRecord):
    """A front member as ``fronts.csv`` lists it: its record and the generation whose front it
    was on (written by :func:`run_generation` alone)."""

    generation: int


class SubnetProblem(Problem):
    """Bounds and sizes only: evaluation happens outside pymoo (ask/tell)."""

    def __init__(self, xl: np.ndarray, xu: np.ndarray, n_obj: int) -> None:
        super().__init__(n_var=len(xl), n_obj=n_obj, n_ieq_constr=1, xl=xl, xu=xu, vtype=int)


class ResampleMutation(Mutation):
    """Each gene, with probability ``prob_var``, takes one of its *other* values, drawn uniformly.

    Why not pymoo's polynomial mutation: it perturbs a float by a step that shrinks with ``eta``
    and is rounded back, so a gene with 2-4 values almost never moves (about 0.05 % of genes per
    generation at ``eta=20``) and a value lost from the population never returns. pymoo's
    ``ChoiceRandomMutation`` (operators/mutation/rm.py) resamples among *all* values of a
    mixed-variable problem, so a "mutation" keeps the gene a ``1/k`` of the time; here every
    selected gene changes, and every value of every gene can reappear at any generation.
    """

    def __init__(self, prob_var: float) -> None:
        super().__init__(prob=1.0, prob_var=prob_var)  # every offspring is offered to the per-gene draw

    def _do(
        self, problem: Problem, X: np.ndarray, random_state: np.random.Generator | None = None, **kwargs: Any
    ) -> np.ndarray:
        X = np.asarray(X).astype(int)  # a copy: the parents' genes stay as they were
        low, high = np.asarray(problem.xl, dtype=int), np.asarray(problem.xu, dtype=int)
        chosen = (random_state.random(X.shape) < self.get_prob_var(problem)) & (high > low)
        rows, genes = np.nonzero(chosen)
        offset = X[rows, genes] - low[genes]
        # a draw among the k - 1 other values: skip the current one by shifting the draws above it
        draw = (random_state.random(len(genes)) * (high[genes] - low[genes])).astype(int)
        X[rows, genes] = low[genes] + draw + (draw >= offset)
        return X


def build_algorithm(
    encoding: Encoding,
    n_obj: int,
    pop_size: int,
    generations: int,
    seed: int,
    crossover_prob: float = 0.9,
    mutation_prob: float | None = None,
) -> NSGA2:
    """NSGA-II on the integer genes of ``encoding``: random integer sampling, uniform crossover
    (each gene from either parent, with probability ``crossover_prob`` per mating; genes are
    copied, never rounded) and :class:`ResampleMutation` with per-gene probability
    ``mutation_prob`` (null = 1 / genes: one gene per offspring on average)."""
    prob_var = 1.0 / encoding.n_var if mutation_prob is None else float(mutation_prob)
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=IntegerRandomSampling(),
        crossover=UniformCrossover(prob=crossover_prob),
        mutation=ResampleMutation(prob_var),
        eliminate_duplicates=True,
    )
    algorithm.setup(
        SubnetProblem(encoding.xl, encoding.xu, n_obj), termination=("n_gen", generations), seed=seed, verbose=False
    )
    return algorithm


class UniformProposals:
    """Random search (``searcher=random searcher.space=fmas``) behind NSGA-II's ask/tell: every
    generation is ``pop_size`` genes drawn uniformly and independently, and what was scored
    teaches nothing. Scoring, the cache and the front are the same as for NSGA-II."""

    def __init__(self, problem: SubnetProblem, pop_size: int, seed: int) -> None:
        self.problem = problem
        self.pop_size = int(pop_size)
        self.rng = np.random.default_rng(seed)

    def ask(self) -> Population:
        X = self.rng.integers(self.problem.xl, self.problem.xu, endpoint=True, size=(self.pop_size, self.problem.n_var))
        return Population.new("X", X)

    def tell(self, infills: Population) -> None:
        """Nothing to learn."""


def build_search_algorithm(
    proposals: Proposals, encoding: Encoding, n_obj: int, pop_size: int, generations: int, seed: int, **nsga2: Any
) -> NSGA2 | UniformProposals:
    """NSGA-II (FMAS) or uniform proposals (its random baseline, at the same number of proposals).
    The settings were checked with the config; what the supernet's space offers is known only now."""
    if encoding.n_var == 0:
        raise ConfigError("the elastic space of this supernet has no choices to search")
    if proposals == Proposals.random:
        return UniformProposals(SubnetProblem(encoding.xl, encoding.xu, n_obj), pop_size, seed)
    return build_algorithm(encoding, n_obj, pop_size, generations, seed, **nsga2)


@dataclass
class SearchState:
    """What a resumed search needs to propose exactly the sequence the uninterrupted one would
    have: the algorithm (population, its random generator), the records cache, the per-generation
    rows and fronts, and the supernet facts (``extra``)."""

    algorithm: NSGA2 | UniformProposals
    generation: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    fronts: list[FrontRecord] = field(default_factory=list)
    cache: dict[str, SubnetRecord] = field(default_factory=dict)
    hits: int = 0
    scored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The state as checkpoint content (the algorithm pickled: pymoo objects are plain Python)."""
        return {
            "algorithm": pickle.dumps(self.algorithm),
            "generation": self.generation,
            "history": self.history,
            "fronts": self.fronts,
            "cache": self.cache,
            "hits": self.hits,
            "scored": self.scored,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SearchState:
        return cls(
            pickle.loads(state["algorithm"]),
            state["generation"],
            state["history"],
            state["fronts"],
            state["cache"],
            state["hits"],
            state["scored"],
            state["extra"],
        )

    def population(self) -> dict[str, Any]:
        """The genes and objectives of the current population and the algorithm's random state:
        what every DDP rank must hold bitwise equal."""
        algorithm = self.algorithm
        if isinstance(algorithm, UniformProposals):
            return {"generation": self.generation, "rng": algorithm.rng.bit_generator.state}
        pop = algorithm.pop
        return {
            "generation": self.generation,
            "X": None if pop is None else pop.get("X"),
            "F": None if pop is None else pop.get("F"),
            "rng": algorithm.random_state.bit_generator.state,
        }


def run_generation(
    state: SearchState,
    encoding: Encoding,
    evaluator: Evaluator,
    objectives: Sequence[str],
    scale: dict[str, float],
    reference: Sequence[float],
) -> tuple[dict[str, Any], list[SubnetRecord]]:
    """One generation: ask, price and score the new sub-networks (cache first), tell; returns the
    generation's row (hypervolume of the front of everything scored so far, its size, candidates
    scored, cache hits) and that front. ``state`` advances; the evaluator shares its cache."""
    evaluator.cache, evaluator.hits, evaluator.scored = state.cache, state.hits, state.scored
    algorithm = state.algorithm
    start = time.perf_counter()
    hits, scored = evaluator.hits, evaluator.scored
    population = algorithm.ask()
    records = evaluator.evaluate_many([encoding.decode(x) for x in population.get("X")])
    F = objective_matrix(records, objectives, scale)
    G = np.array([[r["violation"]] for r in records], dtype=float)
    PymooEvaluator().eval(StaticProblem(algorithm.problem, F=F, G=G), population)
    algorithm.tell(infills=population)
    state.generation += 1
    state.hits, state.scored = evaluator.hits, evaluator.scored
    front = front_records(list(state.cache.values()), objectives, scale)
    row = {
        "generation": state.generation,
        "hypervolume": hypervolume(objective_matrix(front, objectives, scale), reference),
        "front_size": len(front),
        "proposed": len(records),
        "scored": evaluator.scored - scored,
        "scored_total": evaluator.scored,
        "infeasible": sum(not r["feasible"] for r in records),
        "cache_hits": evaluator.hits - hits,
        "cache_hits_total": evaluator.hits,
        "best_miou": max((r["miou"] for r in front), default=None),
        "wall_s": round(time.perf_counter() - start, 3),
    }
    if "miou_int8" in objectives:
        row["best_miou_int8"] = max((r["miou_int8"] for r in front), default=None)
    state.history.append(row)
    state.fronts.extend(FrontRecord(**r, generation=state.generation) for r in front)
    return row, front
