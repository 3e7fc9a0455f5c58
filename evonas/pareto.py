"""Pareto dominance, as NSGA-II uses it (Deb et al. 2002): non-dominated rank, crowding distance, and the front.

Every objective is maximized (a minimized metric is negated before it gets here). A row that is not `valid`
(an empty slot, a diverged child, a child that breaks a constraint) dominates nothing, is dominated by nothing,
and gets the worst rank (the number of rows) and crowding 0, so it loses every comparison with a valid row.

`ranks_and_crowding` is pure `jnp`, so the strategies call it inside their jitted `ask`; `front_mask` and
`hypervolume_2d` are numpy, for the run directory's `pareto.json` and the experiments.
"""

import jax
import jax.numpy as jnp
import numpy as np

Values = jax.Array  # float32[num, num_objectives], higher is better in every column


def dominance(values: Values, valid: jax.Array) -> jax.Array:
    """bool[num, num]: entry [i, j] is true where row i dominates row j (at least as good everywhere, better once)."""
    at_least = jnp.all(values[:, None, :] >= values[None, :, :], axis=-1)
    better = jnp.any(values[:, None, :] > values[None, :, :], axis=-1)
    return at_least & better & valid[:, None] & valid[None, :]


def ranks(values: Values, valid: jax.Array) -> jax.Array:
    """int32[num]: 0 for the non-dominated rows, 1 for those that only rank-0 rows dominate, ...; `num` if invalid."""
    num = values.shape[0]
    dominates = dominance(values, valid)

    def peel(front_index, carry):
        rank, remaining = carry
        dominated = jnp.any(dominates & remaining[:, None], axis=0)
        front = remaining & ~dominated
        return jnp.where(front, front_index, rank), remaining & ~front

    rank, _ = jax.lax.fori_loop(0, num, peel, (jnp.full((num,), num, jnp.int32), valid))
    return rank


def crowding(values: Values, rank: jax.Array) -> jax.Array:
    """float32[num]: NSGA-II's crowding distance of each row within its front (rows of the same rank).

    Per objective, a front's rows are ordered by value, ties by row index; the first and last get +inf, every other
    row the gap between its two neighbours divided by the front's range (0 where the range is 0). The distance is
    the sum over objectives. Invalid rows (rank `num`) get 0.
    """
    num, num_objectives = values.shape
    index = jnp.arange(num)
    valid = rank < num
    finite = jnp.where(valid[:, None], values, 0.0)
    distance = jnp.zeros((num,), jnp.float32)
    for k in range(num_objectives):
        column = finite[:, k]
        order = jnp.lexsort((index, column, rank))  # by rank, then value, then index
        sorted_rank, sorted_value = rank[order], column[order]
        has_previous = jnp.concatenate([jnp.zeros((1,), bool), sorted_rank[1:] == sorted_rank[:-1]])
        has_next = jnp.concatenate([sorted_rank[:-1] == sorted_rank[1:], jnp.zeros((1,), bool)])
        previous = jnp.concatenate([sorted_value[:1], sorted_value[:-1]])
        following = jnp.concatenate([sorted_value[1:], sorted_value[-1:]])
        low = jax.ops.segment_min(column, rank, num_segments=num + 1)[sorted_rank]
        high = jax.ops.segment_max(column, rank, num_segments=num + 1)[sorted_rank]
        span = high - low
        gap = jnp.where(span > 0, (following - previous) / jnp.where(span > 0, span, 1.0), 0.0)
        contribution = jnp.where(has_previous & has_next, gap, jnp.inf)
        distance = distance.at[order].add(contribution.astype(jnp.float32))
    return jnp.where(valid, distance, 0.0)


def ranks_and_crowding(values: Values, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """NSGA-II's two selection keys: lower rank wins, and within a rank larger crowding distance wins."""
    valid = valid & jnp.all(jnp.isfinite(values), axis=-1)
    rank = ranks(values, valid)
    return rank, crowding(values, rank)


def front_mask(values: np.ndarray) -> np.ndarray:
    """bool[num]: the rows of float[num, num_objectives] (maximized) that no other row dominates; rows with a NaN or
    an infinity are never on the front."""
    values = np.asarray(values, float)
    valid = np.all(np.isfinite(values), axis=1)
    at_least = np.all(values[:, None, :] >= values[None, :, :], axis=-1)
    better = np.any(values[:, None, :] > values[None, :, :], axis=-1)
    dominated = np.any(at_least & better & valid[:, None], axis=0)
    return valid & ~dominated


def hypervolume_2d(values: np.ndarray, reference: tuple[float, float]) -> float:
    """The area that the rows of float[num, 2] (both maximized) dominate above `reference`; rows not strictly above
    the reference in both objectives add nothing."""
    values = np.asarray(values, float).reshape(-1, 2)
    above = values[np.all(values > np.asarray(reference, float), axis=1)]
    points = above[front_mask(above)]
    points = points[np.argsort(-points[:, 0])]  # first objective falling, so the second rises along the front
    area, floor = 0.0, reference[1]
    for first, second in points:
        if second > floor:
            area += (first - reference[0]) * (second - floor)
            floor = second
    return float(area)
