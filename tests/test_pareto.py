"""NSGA-II's non-dominated sort, crowding distance and the hypervolume, against brute-force references."""

import itertools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evonas import pareto


def reference_ranks(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank by definition: a point's rank is the length of the longest chain of valid points dominating it."""
    num = len(values)

    def dominates(i, j):
        return valid[i] and valid[j] and all(values[i] >= values[j]) and any(values[i] > values[j])

    rank = np.full(num, num)
    for i in sorted(range(num), key=lambda i: -sum(values[i])):  # a dominator has a larger sum: ranked first
        if valid[i]:
            rank[i] = max((rank[j] + 1 for j in range(num) if dominates(j, i)), default=0)
    return rank


def reference_crowding(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Deb et al.'s crowding distance, front by front, with Python sorts."""
    distance = np.zeros(len(values))
    for r in set(rank.tolist()) - {len(values)}:
        members = [i for i in range(len(values)) if rank[i] == r]
        for k in range(values.shape[1]):
            ordered = sorted(members, key=lambda i: (values[i, k], i))
            span = values[ordered[-1], k] - values[ordered[0], k]
            distance[ordered[0]] = distance[ordered[-1]] = np.inf
            for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
                distance[here] += (values[after, k] - values[before, k]) / span if span > 0 else 0.0
    return distance


points = st.integers(1, 24).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float32, (n, 2 + n % 2), elements=st.integers(0, 5).map(float)),  # coarse: many ties
    hnp.arrays(bool, (n,), elements=st.booleans())))


@settings(max_examples=60, deadline=None)
@given(points)
def test_ranks_and_crowding_match_a_brute_force_reference(case):
    values, valid = case
    rank, crowding = jax.jit(pareto.ranks_and_crowding)(jnp.asarray(values), jnp.asarray(valid))
    expected_rank = reference_ranks(values.astype(float), valid)
    np.testing.assert_array_equal(np.asarray(rank), expected_rank)
    np.testing.assert_allclose(np.asarray(crowding), reference_crowding(values.astype(float), expected_rank),
                               rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(0, 20), st.just(2)), elements=st.floats(-3, 3)))
def test_front_mask_keeps_exactly_the_points_no_other_dominates(values):
    mask = pareto.front_mask(values)
    for i, j in itertools.permutations(range(len(values)), 2):
        if mask[i] and mask[j]:
            assert not (all(values[j] >= values[i]) and any(values[j] > values[i]))
    for i in np.flatnonzero(~mask):
        assert any(all(values[j] >= values[i]) and any(values[j] > values[i]) for j in np.flatnonzero(mask))


def test_invalid_and_nonfinite_rows_rank_last_with_no_crowding():
    values = jnp.asarray([[1.0, 1.0], [5.0, 5.0], [-jnp.inf, -jnp.inf], [0.0, 2.0]])
    rank, crowding = pareto.ranks_and_crowding(values, jnp.asarray([True, False, True, True]))
    np.testing.assert_array_equal(rank, [0, 4, 4, 0])
    np.testing.assert_array_equal(crowding, [np.inf, 0.0, 0.0, np.inf])


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(0, 8), st.just(2)), elements=st.integers(0, 6).map(float)))
def test_hypervolume_2d_is_the_area_of_the_union_of_boxes_on_a_grid(values):
    # Every corner is on the integer grid, so the union's area is a count of unit cells.
    cells = sum(any(x < a and y < b for a, b in values) for x in range(6) for y in range(6))
    assert pareto.hypervolume_2d(values, (0.0, 0.0)) == cells
