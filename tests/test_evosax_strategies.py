"""evosax's strategies behind evonas's ask/tell API, and the contract every registered strategy keeps."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evonas import strategies
from evonas.cli import main
from evonas.evosax_strategies import CMAES, GeneticAlgorithm
from evonas.space import Gene, SearchSpace
from evonas.strategies import NO_ID, STRATEGIES

SETTINGS = {"population_size": 8, "num_children_per_generation": 4, "sample_size": 3, "crossover_rate": 0.5}


@pytest.fixture(autouse=True)
def strict_jax():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


def space_of(*num_choices: int) -> SearchSpace:
    return SearchSpace(tuple(Gene(f"g{i}", tuple(range(n))) for i, n in enumerate(num_choices)))


SPACE = space_of(3, 1, 5, 2, 4, 4, 6)


def closeness(genomes: jax.Array) -> jax.Array:
    """A toy fitness peaking at genome [1, 0, 3, 1, 2, 0, 5]."""
    target = jnp.array([1, 0, 3, 1, 2, 0, 5], jnp.int32)
    return -jnp.sum(jnp.abs(genomes - target[None]), axis=-1).astype(jnp.float32)


@pytest.fixture(scope="module")
def every_strategy() -> dict[str, strategies.Strategy]:
    return {name: strategies.make(name, SPACE, **SETTINGS) for name in STRATEGIES}


def run_in_python(strategy, key, num_generations):
    state, asked = strategy.init(), []
    for generation in range(num_generations):
        children, parents = strategy.ask(jax.random.fold_in(key, generation), state)
        state = strategy.tell(state, children, closeness(children))
        asked.append((children, parents))
    return state, jax.tree.map(lambda *xs: jnp.stack(xs), *asked)


def run_in_scan(strategy, key, num_generations):
    def generation(state, step):
        children, parents = strategy.ask(jax.random.fold_in(key, step), state)
        return strategy.tell(state, children, closeness(children)), (children, parents)

    return jax.jit(lambda: jax.lax.scan(generation, strategy.init(), jnp.arange(num_generations)))()


def test_every_strategy_gives_the_same_search_in_a_python_loop_and_in_lax_scan(every_strategy):
    assert {"evolution", "random", "ga", "cma_es"} <= set(every_strategy)
    for name, strategy in every_strategy.items():
        key = jax.random.key(7)
        loop_state, loop_asked = run_in_python(strategy, key, 6)
        scan_state, scan_asked = run_in_scan(strategy, key, 6)
        for loop_leaf, scan_leaf in zip(jax.tree.leaves((loop_state, loop_asked)), jax.tree.leaves((scan_state, scan_asked))):
            np.testing.assert_array_equal(loop_leaf, scan_leaf, err_msg=name)
        children = np.asarray(loop_asked[0])
        assert children.shape == (6, 4, SPACE.num_genes), name
        assert np.all((children >= 0) & (children < SPACE.num_choices)), name
        assert int(loop_state.next_id) == 24 and int(loop_state.generation) == 6, name


def test_every_strategy_state_has_a_fixed_type_so_nothing_retraces(every_strategy):
    for name, strategy in every_strategy.items():
        state = strategy.init()
        assert not any(leaf.weak_type for leaf in jax.tree.leaves(state)), name
        children, _ = strategy.ask(jax.random.key(0), state)
        told = strategy.tell(state, children, closeness(children))
        assert jax.tree.structure(told) == jax.tree.structure(state), name
        for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(told)):
            assert (before.dtype, before.shape, before.weak_type) == (after.dtype, after.shape, after.weak_type), name


def test_genes_map_to_equal_bins_of_the_unit_interval_and_back():
    strategy = CMAES(SPACE, num_children_per_generation=4)
    x = jnp.array([[0.0, 0.99, 0.19, 0.5, -3.0, 7.0, 0.834]], jnp.float32)
    np.testing.assert_array_equal(strategy.to_genomes(x), [[0, 0, 0, 1, 0, 3, 5]])
    every = jnp.asarray(np.stack(np.meshgrid(*[np.arange(n) for n in SPACE.num_choices])).reshape(SPACE.num_genes, -1).T)
    np.testing.assert_array_equal(strategy.to_genomes(strategy.to_reals(every)), every)


def test_evosax_ask_bookkeeping_does_not_depend_on_the_key():
    # The wrappers' tell repeats evosax's ask with a fixed key to recover the state the real ask left.
    for strategy in (GeneticAlgorithm(SPACE, 6), CMAES(SPACE, 6)):
        state = strategy.init()
        for generation in range(3):
            children, _ = strategy.ask(jax.random.key(generation), state)
            state = strategy.tell(state, children, closeness(children))
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):  # evosax's own rules
            after = [strategy.algorithm.ask(jax.random.key(seed), state.inner, strategy.params)[1] for seed in (1, 2)]
        for first, second in zip(jax.tree.leaves(after[0]), jax.tree.leaves(after[1])):
            np.testing.assert_array_equal(first, second)


def test_genetic_algorithm_starts_random_and_breeds_from_the_better_half():
    strategy = GeneticAlgorithm(SPACE, num_children_per_generation=6, mutation_std=1e-3)
    state = strategy.init()
    first, parents = strategy.ask(jax.random.key(0), state)
    assert np.all(parents == NO_ID)
    assert len(np.unique(np.asarray(first), axis=0)) > 1
    fitness = jnp.array([0.0, 5.0, 1.0, 4.0, 3.0, 2.0], jnp.float32)
    state = strategy.tell(state, first, fitness)
    better_half = {tuple(row) for row in np.asarray(first)[[1, 3, 4]]}
    for seed in range(5):
        # With almost no mutation each gene comes from one of the better half.
        children = np.asarray(strategy.ask(jax.random.key(seed + 1), state)[0])
        for child in children:
            assert all(any(child[g] == parent[g] for parent in better_half) for g in range(SPACE.num_genes))


def test_diverged_children_are_the_worst_for_evosax():
    strategy = GeneticAlgorithm(SPACE, num_children_per_generation=4)
    state = strategy.init()
    children, _ = strategy.ask(jax.random.key(0), state)
    state = strategy.tell(state, children, jnp.array([jnp.nan, 1.0, jnp.inf, -jnp.inf], jnp.float32))
    np.testing.assert_array_equal(state.inner.fitness, [np.inf, -1.0, np.inf, np.inf])


def test_evosax_strategies_beat_random_search_on_a_smooth_objective():
    def mean_best(name):
        strategy = strategies.make(name, SPACE, **{**SETTINGS, "num_children_per_generation": 8})

        def best_found(key):
            def generation(state, step):
                children, _ = strategy.ask(jax.random.fold_in(key, step), state)
                fitness = closeness(children)
                return strategy.tell(state, children, fitness), fitness.max()

            return jax.lax.scan(generation, strategy.init(), jnp.arange(25))[1].max()

        return float(jax.jit(jax.vmap(best_found))(jax.random.split(jax.random.key(0), 16)).mean())

    random_best = mean_best("random")
    for name in ("ga", "cma_es"):
        assert mean_best(name) > random_best, name


def test_bad_evosax_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="crossover_rate"):
        GeneticAlgorithm(SPACE, 4, crossover_rate=2.0)
    with pytest.raises(ValueError, match="mutation_std"):
        GeneticAlgorithm(SPACE, 4, mutation_std=0.0)
    with pytest.raises(ValueError, match="at least 2 children"):
        CMAES(SPACE, 1)
    with pytest.raises(ValueError, match="unknown strategy 'nes'"):
        strategies.make("nes", SPACE, **SETTINGS)


SMALL_SEARCH = {"space": {"max_blocks": 1, "ops": ["identity", "conv3"], "widths": [16], "heads": [1]},
                "steps_per_call": 5}


@pytest.mark.parametrize("name", ["ga", "cma_es"])
def test_evosax_strategy_runs_a_whole_search_from_the_command_line(name, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_SEARCH))
    out = tmp_path / "run"
    argv = ["search", "--config", str(config), "--strategy", name, "--children", "8", "--batch", "4",
            "--population", "4", "--steps", "5", "--out", str(out), "--quiet"]
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        assert main(argv) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [record["id"] for record in history] == list(range(8))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == name and summary["children"] == 8
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in history if not r["diverged"])
