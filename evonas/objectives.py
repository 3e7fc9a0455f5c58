"""Searches on an objective you supply: a jittable function, a Python function run on the host, or a CSV table.

    import jax.numpy as jnp
    from evonas.objectives import search
    from evonas.space import Gene, SearchSpace

    space = SearchSpace(tuple(Gene(f"g{i}", tuple(range(4))) for i in range(5)))
    result = search(lambda genomes: -jnp.sum((genomes - 2) ** 2, axis=1).astype(jnp.float32), space,
                    num_evaluations=100)
    result.best_genome, result.best_value  # array([2, 2, 2, 2, 2], dtype=int32), 0.0

Every kind runs the same loop as `evonas replay`: the budget counts distinct genomes evaluated, and a genome asked
again is answered from memory. Higher is better; NaN or inf is the worst and never the best.
"""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evonas import strategies
from evonas.replay import REPLAY_DEFAULTS, make_search
from evonas.space import SearchSpace
from evonas.tables import load_table

MetricsFn = Callable[[jax.Array], jax.Array | dict[str, jax.Array]]  # int32[N, G] -> float32[N] or {name: float32[N]}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One search: the distinct genomes it evaluated, in order, and the best of them."""

    space: SearchSpace
    genomes: np.ndarray  # int32[num_evaluated, num_genes]
    values: np.ndarray  # float32[num_evaluated]: what selection used (the fitness)
    best_genome: np.ndarray | None  # int32[num_genes]; None if no value was finite
    best_value: float | None
    generations: int

    @property
    def best_choices(self) -> dict[str, Any] | None:
        """The best genome's chosen option per gene."""
        return None if self.best_genome is None else self.space.decode(self.best_genome)


def _fitness(metrics: jax.Array | dict[str, jax.Array], fitness_fn: Callable | None, metric: str | None):
    """The scalar selection uses, from what the objective returned."""
    if fitness_fn is not None:
        return fitness_fn(metrics)
    if isinstance(metrics, dict):
        if metric not in metrics:
            raise ValueError(f"the objective returns metrics {sorted(metrics)}: name one with metric=..., or pass "
                             f"fitness_fn to combine them")
        return metrics[metric]
    return metrics


def search(objective: MetricsFn | str | Path, space: SearchSpace | None = None, *, num_evaluations: int = 100,
           strategy: str = "evolution", seed: int = 0, on_host: bool = False, metric: str | None = None,
           genes: Sequence[str] | None = None, fitness_fn: Callable | None = None,
           max_generations: int | None = None, **settings) -> SearchResult:
    """Runs one seeded search of `num_evaluations` distinct genomes.

    Args:
      objective: a function of genomes int32[N, G] returning float32[N], or a dict of several metrics float32[N];
        or the path of a CSV table (then `metric` names its column, `genes` its gene columns, and `space` is
        built from the table).
      space: the search space of a function objective.
      num_evaluations: distinct genomes to evaluate.
      strategy: a name in `evonas.strategies.STRATEGIES`; `settings` override `evonas.replay.REPLAY_DEFAULTS`.
      seed: the search's seed; the same seed gives the same search.
      on_host: call `objective` from Python with numpy genomes (only those not evaluated before), for functions
        that cannot be traced: a simulator, a training run, a service.
      metric: which metric of a dict (or which table column) is the fitness.
      fitness_fn: maps the objective's output (array or dict) to the fitness float32[N]; e.g. a weighted sum.
      max_generations: see `evonas.replay.make_search`.

    Returns:
      The genomes evaluated, their fitness, and the best.

    Raises:
      ValueError: bad settings; evonas.tables.TableError: a bad table, or a genome the search asked that is not in it.
    """
    if isinstance(objective, str | Path):
        if metric is None:
            raise ValueError("a table objective needs metric=COLUMN")
        table = load_table(objective, [metric], genes)
        space, values_fn = table.space, lambda genomes: table.lookup(metric)(genomes)
    elif space is None:
        raise ValueError("a function objective needs its space")
    else:
        table = None

        def values_fn(genomes):
            values = jnp.asarray(_fitness(objective(genomes), fitness_fn, metric), jnp.float32)
            return values, jnp.ones(values.shape, bool)
    strategy = strategies.make(strategy, space, **{**REPLAY_DEFAULTS.get(strategy, {}), **settings})
    if on_host:
        return _host_search(strategy, objective, fitness_fn, metric, num_evaluations, seed, max_generations)
    memory, steps = jax.jit(make_search(strategy, values_fn, num_evaluations, max_generations))(jax.random.key(seed))
    if table is not None and (np.asarray(memory.missing) >= 0).all():
        table.evaluate(metric, np.asarray(memory.missing)[None])  # raises the TableError naming the genome
    count = int(memory.num_read)
    return _result(space, np.asarray(memory.genomes)[:count], np.asarray(memory.values)[:count], int(steps))


def _host_search(strategy, objective, fitness_fn, metric, num_evaluations, seed, max_generations) -> SearchResult:
    """The same loop as `make_search`, with the objective called from Python on the genomes not read before."""
    key, state, read = jax.random.key(seed), strategy.init(), {}
    max_generations = max_generations or 10 * -(-num_evaluations // strategy.num_children_per_generation)
    step = 0
    while len(read) < num_evaluations and step < max_generations:
        children, _ = strategy.ask(jax.random.fold_in(key, step), state)
        children = np.asarray(children)
        fresh = list(dict.fromkeys(tuple(g) for g in children.tolist() if tuple(g) not in read))
        fresh = fresh[:num_evaluations - len(read)]
        if fresh:
            values = np.asarray(_fitness(objective(np.array(fresh, np.int32)), fitness_fn, metric), np.float32)
            if values.shape != (len(fresh),):
                raise ValueError(f"the objective returned shape {values.shape} for {len(fresh)} genomes")
            read.update(zip(fresh, values.tolist()))
        told = np.array([read.get(tuple(g), np.nan) for g in children.tolist()], np.float32)
        state = strategy.tell(state, children, told)
        step += 1
    genomes = np.array(list(read), np.int32).reshape(-1, strategy.space.num_genes)
    return _result(strategy.space, genomes, np.array(list(read.values()), np.float32), step)


def _result(space, genomes, values, generations) -> SearchResult:
    finite = np.isfinite(values)
    if not finite.any():
        return SearchResult(space, genomes, values, None, None, generations)
    index = int(np.argmax(np.where(finite, values, -np.inf)))
    return SearchResult(space, genomes, values, genomes[index], float(values[index]), generations)
