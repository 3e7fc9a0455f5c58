"""Replicated searches: thousands of seeded searches of a jittable objective in one compiled call.

`make_search(strategy, objective_fn, num_evaluations)` returns a pure `search(key)`: a loop over generations
(`lax.while_loop`, since a budget of *distinct* genomes read ends at a generation that depends on the draws) that
asks, answers each child and tells. `jax.vmap(search)` over seeds runs them all at once.

The budget counts distinct genomes whose metric was read. A child asked again, in the same generation or a later
one, is answered from the search's memory of what it read and costs nothing, so a strategy that proposes what it
has seen wastes a generation, not budget. A search also stops after `max_generations`, so a strategy that only
proposes genomes it has seen (a collapsed CMA-ES) cannot loop forever; `short` reports such searches.

    table = load_table("bench.csv", ["accuracy"])
    strategy = strategies.make("evolution", table.space, **REPLAY_DEFAULTS["evolution"])
    result = replay(strategy, table.lookup("accuracy"), num_evaluations=100, num_seeds=1000)
"""

import inspect
import json
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from evonas import strategies
from evonas.errors import InputError
from evonas.tables import TableError, load_table

ObjectiveFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # int32[N, G] -> (float32[N], found bool[N])

# Each strategy's settings for small budgets; aging evolution's were tuned on the synthetic tables at 100 and 200
# evaluations (experiments/README.md, "Strategy defaults for small budgets").
REPLAY_DEFAULTS: dict[str, dict[str, Any]] = {
    "evolution": {"population_size": 20, "sample_size": 5, "num_children_per_generation": 1, "mutation_rate": 0.0,
                  "crossover_rate": 0.0},
    "random": {"population_size": 10, "num_children_per_generation": 10},
    "ga": {"num_children_per_generation": 10},
    "cma_es": {"num_children_per_generation": 10},
}


@struct.dataclass
class Memory:
    """What one search has read: distinct genomes and their metrics, in reading order."""

    genomes: jax.Array  # int32[num_evaluations, num_genes]; -1 where nothing was read yet
    values: jax.Array  # float32[num_evaluations]
    num_read: jax.Array  # int32[]
    best: jax.Array  # float32[]: the best finite metric read; -inf before any
    missing: jax.Array  # int32[num_genes]: a genome the objective did not find (not in the table), or all -1


def make_search(strategy: strategies.Strategy, objective_fn: ObjectiveFn, num_evaluations: int,
                max_generations: int | None = None) -> Callable[[jax.Array], tuple[Memory, jax.Array]]:
    """A pure `search(key) -> (memory, generations)` of `num_evaluations` distinct genomes.

    Args:
      strategy: any registered strategy; its `ask` and `tell` run inside the loop.
      objective_fn: jittable; maps genomes int32[N, G] to (metric float32[N], found bool[N]), higher is better;
        NaN is the worst.
      num_evaluations: the budget of distinct genomes read.
      max_generations: a search stops here even if its budget is not spent; default 10x the generations that
        `num_evaluations` needs when no child repeats.
    """
    num_children = strategy.num_children_per_generation
    if max_generations is None:
        max_generations = 10 * math.ceil(num_evaluations / num_children)
    arange = jnp.arange(num_children, dtype=jnp.int32)

    def generation(carry):
        key, state, memory, step = carry
        children, _ = strategy.ask(jax.random.fold_in(key, step), state)
        seen = jnp.all(children[:, None, :] == memory.genomes[None, :, :], axis=2)  # [children, num_evaluations]
        in_memory = seen.any(axis=1)
        remembered = memory.values[jnp.argmax(seen, axis=1)]
        same = jnp.all(children[:, None, :] == children[None, :, :], axis=2)
        new = ~in_memory & (jnp.argmax(same, axis=1) == arange)  # not read before, nor earlier in this batch
        slot = memory.num_read + jnp.cumsum(new.astype(jnp.int32)) - 1
        read = new & (slot < num_evaluations)  # the budget may end inside a generation
        looked_up, found = objective_fn(children)
        values = jnp.where(in_memory, remembered, looked_up)
        slot = jnp.where(read, slot, num_evaluations)  # out of range: dropped
        is_missing = read & ~found
        memory = memory.replace(
            genomes=memory.genomes.at[slot].set(children, mode="drop"),
            values=memory.values.at[slot].set(looked_up, mode="drop"),
            num_read=memory.num_read + read.sum(dtype=jnp.int32),
            best=jnp.maximum(memory.best, jnp.where(read & found & jnp.isfinite(looked_up), looked_up, -jnp.inf).max()),
            missing=jnp.where(is_missing.any(), children[jnp.argmax(is_missing)], memory.missing),
        )
        return key, strategy.tell(state, children, values), memory, step + 1

    def running(carry):
        _, _, memory, step = carry
        return (memory.num_read < num_evaluations) & (step < max_generations)

    def search(key: jax.Array) -> tuple[Memory, jax.Array]:
        num_genes = strategy.space.num_genes
        memory = Memory(genomes=jnp.full((num_evaluations, num_genes), -1, jnp.int32),
                        values=jnp.full((num_evaluations,), jnp.nan, jnp.float32), num_read=jnp.array(0, jnp.int32),
                        best=jnp.array(-jnp.inf, jnp.float32), missing=jnp.full((num_genes,), -1, jnp.int32))
        _, _, memory, steps = jax.lax.while_loop(running, generation, (key, strategy.init(), memory, jnp.array(0, jnp.int32)))
        return memory, steps

    return search


def replay(strategy: strategies.Strategy, objective_fn: ObjectiveFn, num_evaluations: int, num_seeds: int,
           seed: int = 0, max_generations: int | None = None) -> dict[str, np.ndarray]:
    """`num_seeds` searches as one compiled `vmap`; per seed: best metric, genomes read, generations run."""
    search = make_search(strategy, objective_fn, num_evaluations, max_generations)
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    memory, steps = jax.jit(jax.vmap(search))(keys)
    return {"best": np.asarray(memory.best), "num_read": np.asarray(memory.num_read),
            "generations": np.asarray(steps), "missing": np.asarray(memory.missing)}


def settings_of(strategy: strategies.Strategy) -> dict[str, Any]:
    """The constructor settings of `strategy` (defaults included), as JSON-ready values."""
    parameters = inspect.signature(type(strategy).__init__).parameters
    return {name: getattr(strategy, name) for name in parameters if name not in ("self", "space")
            if hasattr(strategy, name)}


def replay_table(path: str, metric: str, genes: list[str] | None, num_evaluations: int, num_seeds: int,
                 strategy_name: str = "evolution", settings: dict[str, Any] | None = None, seed: int = 0,
                 max_generations: int | None = None) -> dict[str, Any]:
    """Replays `num_seeds` searches on a CSV table; the result is what `evonas replay` writes.

    Raises:
      TableError: a bad table, column, or a genome the strategy asked that is not in the table.
      ValueError: a bad setting.
    """
    start = time.perf_counter()
    if num_evaluations < 1 or num_seeds < 1:
        raise ValueError(f"--evaluations and --seeds must be at least 1, got {num_evaluations} and {num_seeds}")
    table = load_table(path, [metric], genes)
    if num_evaluations > len(table.genomes):
        raise ValueError(f"--evaluations {num_evaluations} is more than the {len(table.genomes)} genomes of {path}")
    if strategy_name not in strategies.STRATEGIES:
        raise ValueError(f"unknown strategy {strategy_name!r}; choose from {sorted(strategies.STRATEGIES)}")
    accepted = inspect.signature(strategies.STRATEGIES[strategy_name].__init__).parameters
    if unknown := sorted(set(settings or {}) - set(accepted)):
        raise ValueError(f"strategy {strategy_name!r} takes no {', '.join(unknown)}; its settings are "
                         f"{[name for name in accepted if name not in ('self', 'space')]}")
    strategy = strategies.make(strategy_name, table.space, **{**REPLAY_DEFAULTS[strategy_name], **(settings or {})})
    result = replay(strategy, table.lookup(metric), num_evaluations, num_seeds, seed, max_generations)
    if (result["missing"] >= 0).any():
        genome = result["missing"][np.argmax((result["missing"] >= 0).all(axis=1))]
        raise TableError(f"{path}: the search asked for genome {table.space.decode(genome)}, which is not "
                         f"in the table; a table for search must hold every combination of its gene values")
    best = result["best"].astype(np.float64)
    table_max = float(np.nanmax(table.column(metric)))
    return {
        "table": str(path), "metric": metric, "genes": list(table.space.names), "rows": len(table.genomes),
        "best": best.tolist(), "best_mean": float(best.mean()), "best_std": float(best.std()),
        "table_max": table_max, "found_max_share": float(np.mean(result["best"] == np.float32(table_max))),
        "evaluations": num_evaluations, "seeds": num_seeds, "strategy": strategy_name,
        "settings": settings_of(strategy),
        "short": int(np.sum(result["num_read"] < num_evaluations)),  # seeds that hit max_generations first
        "seconds": time.perf_counter() - start,
    }


def add_parser(subparsers) -> None:
    """The `evonas replay` subcommand."""
    parser = subparsers.add_parser("replay", help="replay thousands of seeded searches on a table of genome -> metric "
                                   "in one compiled call")
    parser.add_argument("--table", required=True, metavar="FILE.csv", help="CSV with a header: gene columns, metric "
                        "columns")
    parser.add_argument("--metric", required=True, metavar="COLUMN", help="the column to maximize")
    parser.add_argument("--genes", metavar="COL,COL,...", help="gene columns in genome order (default: every column "
                        "but the metric)")
    parser.add_argument("--evaluations", type=int, required=True, help="distinct genomes read per search")
    parser.add_argument("--seeds", type=int, required=True, help="searches, one per seed")
    parser.add_argument("--seed", type=int, default=0, help="the seeds are split from this key (default %(default)s)")
    parser.add_argument("--strategy", default="evolution", choices=list(strategies.STRATEGIES), help="default "
                        "%(default)s")
    defaults = ", ".join(f"{name}: {settings}" for name, settings in REPLAY_DEFAULTS.items())
    parser.epilog = f"Defaults per strategy: {defaults}."
    parser.add_argument("--population", type=int, help="population size (evolution, random)")
    parser.add_argument("--sample-size", type=int, help="tournament size (evolution)")
    parser.add_argument("--children-per-generation", "--batch", dest="batch", type=int,
                        help="children per generation (cma_es needs 2 or more)")
    parser.add_argument("--mutation-rate", type=float, help="per-gene rate (evolution; 0: one gene changes)")
    parser.add_argument("--crossover-rate", type=float, help="evolution, ga")
    parser.add_argument("--mutation-std", type=float, help="ga: Gaussian mutation on a gene's [0, 1] coordinate")
    parser.add_argument("--std-init", type=float, help="cma_es: initial step size on the [0, 1] coordinates")
    parser.add_argument("--max-generations", type=int, help="stop a search here even if its budget is not spent "
                        "(default: 10x the generations the budget needs)")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="where the results go")


SETTING_OPTIONS = {"population": "population_size", "sample_size": "sample_size", "batch": "num_children_per_generation",
                   "mutation_rate": "mutation_rate", "crossover_rate": "crossover_rate", "mutation_std": "mutation_std",
                   "std_init": "std_init"}


def run_command(args) -> int:
    """`evonas replay`: one line on success, a one-line error and exit status 2 on bad input."""
    settings = {field: getattr(args, option) for option, field in SETTING_OPTIONS.items()
                if getattr(args, option) is not None}
    genes = [name.strip() for name in args.genes.split(",")] if args.genes else None
    try:
        result = replay_table(args.table, args.metric, genes, args.evaluations, args.seeds, args.strategy, settings,
                              args.seed, args.max_generations)
        with open(args.out, "w") as stream:
            json.dump(result, stream, indent=1)
    except OSError as error:
        raise InputError(f"{error.filename}: {error.strerror}") from None
    except ValueError as error:  # TableError and the strategies' setting checks
        raise InputError(str(error)) from None
    print(f"{args.strategy}: best {args.metric} {result['best_mean']:.4f} ± {result['best_std']:.4f} over "
          f"{args.seeds} seeds of {args.evaluations} evaluations; table maximum {result['table_max']:.4f} found by "
          f"{100 * result['found_max_share']:.1f}% of seeds; {result['seconds']:.1f} s; results in {args.out}")
    return 0
