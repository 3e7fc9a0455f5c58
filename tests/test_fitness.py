"""The objective hook: weighted sums, constraints and Pareto selection, and that breakers are never parents or best."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evonas import monitor, retrain, strategies
from evonas.errors import ConfigError, InputError
from evonas.fitness import Objective, best_record, is_candidate
from evonas.space import Gene, SearchSpace
from evonas.strategies import NO_ID, AgingEvolution


def metrics(accuracy, params, diverged=None):
    return {"val_accuracy": jnp.asarray(accuracy, jnp.float32), "params": jnp.asarray(params, jnp.float32),
            "diverged": jnp.asarray(diverged if diverged is not None else [False] * len(accuracy))}


def test_weighted_sum_fitness_is_the_sum_of_weighted_metrics():
    objective = Objective.from_options({"val_accuracy": 2.0, "params": -1e-3}, {}, {})
    fitness = objective.fitness(metrics([0.5, 0.25], [100.0, 1000.0]))
    np.testing.assert_allclose(fitness, [2 * 0.5 - 0.1, 2 * 0.25 - 1.0], rtol=1e-6)


def test_default_objective_is_validation_accuracy_and_diverged_is_worst():
    fitness = Objective().fitness(metrics([0.5, 0.75, jnp.nan], [1.0, 2.0, 3.0], [False, True, False]))
    np.testing.assert_array_equal(fitness, [0.5, -np.inf, -np.inf])


def test_constraint_breakers_get_minus_infinity_in_both_modes():
    objective = Objective.from_options({"val_accuracy": 1.0}, {"params": "<= 1e3", "val_accuracy": ">= .2"}, {})
    batch = metrics([0.9, 0.5, 0.1, 0.3], [5e3, 1e3, 10.0, 999.0])
    np.testing.assert_array_equal(objective.feasible(batch), [False, True, False, True])
    np.testing.assert_array_equal(np.isfinite(objective.fitness(batch)), [False, True, False, True])
    pareto = Objective.from_options({"val_accuracy": 1.0}, {"params": "<= 1e3"}, {"val_accuracy": "max",
                                                                                   "params": "min"})
    selection = np.asarray(pareto.selection(batch))
    assert selection.shape == (4, 2)
    np.testing.assert_array_equal(selection[1], [0.5, -1e3])
    assert np.all(np.isneginf(selection[[0]]))


@pytest.mark.parametrize("objective, constraints, pareto, message", [
    ({}, {}, {}, "non-empty"),
    ({"accuracy": 1}, {}, {}, "unknown metrics"),
    ({"val_accuracy": "1"}, {}, {}, "finite number"),
    ({"val_accuracy": 1}, {"params": "< 5"}, {}, "'<= NUMBER'"),
    ({"val_accuracy": 1}, {"params": 5}, {}, "'<= NUMBER'"),
    ({"val_accuracy": 1}, {}, {"params": "min"}, "two or more"),
    ({"val_accuracy": 1}, {}, {"params": "low", "flops": "min"}, "'max' or 'min'"),
])
def test_bad_objective_options_are_config_errors(objective, constraints, pareto, message):
    with pytest.raises(ConfigError, match=message):
        Objective.from_options(objective, constraints, pareto)


def test_records_that_break_a_constraint_are_never_the_best():
    history = [{"id": 0, "fitness": None, "diverged": False}, {"id": 1, "fitness": 0.4, "diverged": False},
               {"id": 2, "fitness": None, "diverged": True}, {"id": 3, "fitness": 0.3, "diverged": False}]
    assert [is_candidate(r) for r in history] == [False, True, False, True]
    assert best_record(history)["id"] == 1
    assert best_record(history[:1]) is None
    assert monitor.best_child(history)["id"] == 1
    with_genomes = [{**r, "genome": [r["id"]]} for r in history]
    assert [r["id"] for r in retrain.top_genomes(with_genomes, 2)] == [1, 3]  # retrain's pick: candidates only
    with pytest.raises(InputError, match="only 2 distinct genomes that did not diverge nor break a constraint"):
        retrain.top_genomes(with_genomes, 3)


def space() -> SearchSpace:
    return SearchSpace(tuple(Gene(f"g{i}", (0, 1, 2, 3)) for i in range(4)))


@pytest.mark.parametrize("num_objectives", [0, 2])
def test_constraint_breakers_are_never_parents(num_objectives):
    strategy = AgingEvolution(space(), population_size=8, sample_size=4, num_children_per_generation=8,
                              num_objectives=num_objectives)
    objective = Objective.from_options({"val_accuracy": 1.0}, {"params": "<= 10"},
                                       {"val_accuracy": "max", "params": "min"} if num_objectives else {})
    # The most accurate half breaks the constraint: an objective that ignored it would breed from them.
    batch = metrics([0.9, 0.8, 0.95, 0.85, 0.1, 0.2, 0.3, 0.15], [50.0] * 4 + [5.0] * 4)
    state = strategy.tell(strategy.init(), jnp.arange(32, dtype=jnp.int32).reshape(8, 4) % 4,
                          objective.selection(batch))
    parents = np.concatenate([np.asarray(strategy.ask(jax.random.key(k), state)[1]) for k in range(20)])
    used = set(parents[parents != NO_ID].tolist())
    assert used and used <= {4, 5, 6, 7}


def test_pareto_tournament_prefers_the_first_front_then_the_less_crowded():
    strategy = AgingEvolution(space(), population_size=5, sample_size=5, num_children_per_generation=5,
                              num_objectives=2)
    # Ids 0, 1, 2 are the first front (1 is between 0 and 2, so crowded); 3 and 4 are dominated.
    values = jnp.asarray([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.4, 0.4], [0.1, 0.1]])
    state = strategy.tell(strategy.init(), jnp.zeros((5, 4), jnp.int32), values)
    parents = np.concatenate([np.asarray(strategy.ask(jax.random.key(k), state)[1])[:, 0] for k in range(10)])
    assert set(parents.tolist()) == {0, 2}  # whole-population tournaments: rank 0, then infinite crowding


def test_pareto_strategy_runs_the_same_in_a_python_loop_and_in_scan():
    strategy = strategies.make("evolution", space(), population_size=6, sample_size=3,
                               num_children_per_generation=3, num_objectives=2)

    def objective(genomes):
        return jnp.stack([genomes.sum(axis=1), -genomes[:, 0] * 2], axis=1).astype(jnp.float32)

    def step(state, key):
        children, _ = strategy.ask(key, state)
        return strategy.tell(state, children, objective(children)), children

    keys = jax.random.split(jax.random.key(3), 6)
    state, looped = strategy.init(), []
    for key in keys:
        state, children = step(state, key)
        looped.append(children)
    scanned_state, scanned = jax.lax.scan(step, strategy.init(), keys)
    np.testing.assert_array_equal(np.stack(looped), scanned)
    np.testing.assert_array_equal(state.fitness, scanned_state.fitness)
    assert state.fitness.shape == (6, 2)
