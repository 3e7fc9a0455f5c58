"""A cheap fitness predictor: a ridge-regression ranker on one-hot genes, fitted to the history so far.

Before a generation is trained, the strategy proposes a pool of `pool x children_per_generation` candidates (its
`ask` under `pool` keys; `ask` is pure, so each key is one more independent proposal). The ranker, fitted on the
candidate children of the history (`evonas.fitness.is_candidate`: not diverged, no constraint broken), scores them,
and only the top `children_per_generation` are trained. The ranker is refitted from `history.jsonl` each
generation, so it adds no state to a checkpoint and a resumed search chooses exactly what the first one did.

    ranker = fit(features(genomes, space), fitness)
    scores = predict(ranker, features(candidates, space))

Until the history holds `min_records` candidates, the strategy's own first children are trained, as with pool 1.
"""

from typing import Any, NamedTuple

import jax
import numpy as np

from evonas.fitness import is_candidate
from evonas.space import SearchSpace

L2 = 1.0  # ridge penalty on one-hot weights; the fitness spans ~0.1-1, so a few records move a weight by ~0.1


class Ranker(NamedTuple):
    """A linear model of fitness: `features @ weights + bias`."""

    weights: np.ndarray  # float64[num_features]
    bias: float


def features(genomes: np.ndarray, space: SearchSpace) -> np.ndarray:
    """float64[num, num_features]: one column per choice of every gene that has more than one choice."""
    genomes = np.asarray(genomes, np.int64).reshape(-1, space.num_genes)
    columns = [genomes[:, gene, None] == np.arange(n) for gene, n in enumerate(space.num_choices) if n > 1]
    return np.concatenate(columns, axis=1).astype(np.float64) if columns else np.zeros((len(genomes), 0))


def fit(x: np.ndarray, y: np.ndarray, l2: float = L2) -> Ranker:
    """Ridge regression of `y` float[num] on `x` float[num, num_features], with an unpenalized bias."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    centred = x - x_mean
    weights = np.linalg.solve(centred.T @ centred + l2 * np.eye(x.shape[1]), centred.T @ (y - y_mean))
    return Ranker(weights, y_mean - float(x_mean @ weights))


def predict(ranker: Ranker, x: np.ndarray) -> np.ndarray:
    """float64[num]: the predicted fitness of each row of `x`."""
    return np.asarray(x, np.float64) @ ranker.weights + ranker.bias


def fit_history(history: list[dict[str, Any]], space: SearchSpace, min_records: int) -> Ranker | None:
    """The ranker fitted on the candidates of `history`, or None while fewer than `min_records` exist."""
    candidates = [r for r in history if is_candidate(r)]
    if len(candidates) < min_records:
        return None
    return fit(features(np.array([r["genome"] for r in candidates]), space), np.array([r["fitness"] for r in candidates]))


def choose(scores: np.ndarray, genomes: np.ndarray, seen: set[tuple[int, ...]], num: int) -> np.ndarray:
    """int[num]: the rows of `genomes` to train, best first: rows not repeating an earlier row, then rows not in
    `seen`, then highest score, then earliest row (so ties keep the strategy's order)."""
    rows, earlier, repeated = [tuple(int(g) for g in genome) for genome in genomes], set(), []
    for row in rows:
        repeated.append(row in earlier)
        earlier.add(row)
    known = [row in seen for row in rows]
    order = np.lexsort((np.arange(len(rows)), -np.asarray(scores), known, repeated))  # last key sorts first
    return order[:num]


def propose(strategy, key: jax.Array, state, history: list[dict[str, Any]], space: SearchSpace, pool: int,
            min_records: int) -> tuple[Any, Any, np.ndarray | None]:
    """A generation's children, their parents, and their predicted fitness (None where nothing was predicted).

    With `pool` 1, or while the ranker cannot be fitted, exactly `strategy.ask(key, state)`. Otherwise the pool
    is asked under `key` and `fold_in(key, i)` for i in 1..pool-1, and the top children by `choose` are kept,
    each with its own parents.
    """
    ranker = fit_history(history, space, min_records) if pool > 1 else None
    if ranker is None:
        children, parents = strategy.ask(key, state)
        return children, parents, None
    asked = [strategy.ask(key if i == 0 else jax.random.fold_in(key, i), state) for i in range(pool)]
    genomes = np.concatenate([np.asarray(children) for children, _ in asked])
    parents = np.concatenate([np.asarray(parents) for _, parents in asked])
    scores = predict(ranker, features(genomes, space))
    kept = choose(scores, genomes, {tuple(r["genome"]) for r in history}, len(genomes) // pool)
    return genomes[kept], parents[kept], scores[kept]
