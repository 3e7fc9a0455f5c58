import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evonas import strategies
from evonas.space import Gene, SearchSpace, text_classifier_space
from evonas.strategies import NO_ID, STRATEGIES, AgingEvolution, RandomSearch

# Compiling `ask` costs about a second on CPU, so tests share a few strategy instances.


@pytest.fixture(autouse=True)
def strict_jax():
    """Silent broadcasting or dtype promotion inside a strategy fails loudly here."""
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


def small_space() -> SearchSpace:
    """Four genes, one with a single choice, which mutation must leave alone."""
    return SearchSpace((Gene("a", (0, 1, 2)), Gene("fixed", ("only",)), Gene("b", (0, 1)), Gene("c", tuple(range(5)))))


@pytest.fixture(scope="module")
def whole_population_tournament() -> AgingEvolution:
    """sample_size == population_size: every tournament sees every filled member."""
    return AgingEvolution(small_space(), population_size=4, sample_size=4, num_children_per_generation=3)


@pytest.fixture(scope="module")
def text_strategies() -> dict[str, strategies.Strategy]:
    """One instance of each registered strategy over the text-classifier space."""
    settings = {"population_size": 5, "num_children_per_generation": 2, "sample_size": 2, "crossover_rate": 0.5}
    return {name: strategies.make(name, text_classifier_space(), **settings) for name in STRATEGIES}


@pytest.fixture(scope="module")
def always_crossover() -> AgingEvolution:
    """Two slots, tournaments of one, and every bred child a crossover of two tournament winners."""
    space = SearchSpace(tuple(Gene(f"g{i}", (0, 1)) for i in range(12)))
    return AgingEvolution(space, population_size=2, sample_size=1, num_children_per_generation=2, crossover_rate=1.0)


def sum_of_genes(genomes: jax.Array) -> jax.Array:
    """A toy fitness with a single optimum: every gene at its last choice."""
    return jnp.sum(genomes, axis=-1).astype(jnp.float32)


def state_with(strategy, genomes, fitness) -> strategies.State:
    """A state whose members are `genomes`, told in order in one generation."""
    return strategy.tell(strategy.init(), jnp.asarray(genomes, jnp.int32), jnp.asarray(fitness, jnp.float32))


def first_parents(strategy, state, num_asks: int) -> np.ndarray:
    """First-parent ids of every bred child over `num_asks` different keys."""
    parent_ids = [strategy.ask(jax.random.key(seed), state)[1][:, 0] for seed in range(num_asks)]
    parent_ids = np.concatenate([np.asarray(ids) for ids in parent_ids])
    return parent_ids[parent_ids != NO_ID]


def test_init_is_an_empty_population(whole_population_tournament):
    state = whole_population_tournament.init()
    assert state.fitness.dtype == jnp.float32
    integer_fields = (state.genomes, state.ids, state.size, state.next_id, state.generation)
    assert all(field.dtype == jnp.int32 for field in integer_fields)
    assert not any(leaf.weak_type for leaf in jax.tree.leaves(state))  # a weak scalar would retrace after one tell
    assert state.genomes.shape == (4, 4) and state.genomes.dtype == jnp.int32
    assert np.all(np.isneginf(state.fitness))
    assert np.all(state.ids == NO_ID)
    assert int(state.size) == int(state.next_id) == int(state.generation) == 0


def test_initial_children_are_random_until_population_is_full(whole_population_tournament):
    strategy = whole_population_tournament
    state = strategy.init()
    children, parents = strategy.ask(jax.random.key(0), state)
    assert np.all(parents == NO_ID)
    assert len(np.unique(np.asarray(children), axis=0)) == 3
    state = strategy.tell(state, children, jnp.array([0.0, 2.0, 1.0]))
    # One slot is left: child 0 fills it at random, children 1 and 2 are bred from the best member.
    _, parents = strategy.ask(jax.random.key(1), state)
    np.testing.assert_array_equal(parents, [[NO_ID, NO_ID], [1, NO_ID], [1, NO_ID]])


def test_tell_fills_empty_slots_in_order_with_increasing_ids(whole_population_tournament):
    state = state_with(whole_population_tournament, [[0, 0, 0, 0], [1, 0, 1, 1], [2, 0, 0, 2]], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(state.ids, [0, 1, 2, NO_ID])
    np.testing.assert_array_equal(state.genomes[:3, 3], [0, 1, 2])
    np.testing.assert_array_equal(state.fitness, [1.0, 2.0, 3.0, -np.inf])
    assert int(state.size) == 3 and int(state.next_id) == 3 and int(state.generation) == 1


def test_aging_removes_oldest_not_worst(whole_population_tournament):
    strategy = whole_population_tournament
    # The oldest member (id 0) is the best; the worst (id 1) is younger.
    state = state_with(strategy, [[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0]], [10.0, -5.0, 0.0, 1.0])
    state = strategy.tell(state, jnp.array([[0, 0, 1, 4], [0, 0, 1, 3]], jnp.int32), jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(state.ids, [4, 5, 2, 3])
    np.testing.assert_array_equal(state.fitness, [1.0, 2.0, 0.0, 1.0])
    np.testing.assert_array_equal(state.genomes[:2, 3], [4, 3])
    assert int(state.size) == 4 and int(state.next_id) == 6 and int(state.generation) == 2


def test_tournament_picks_best_of_sample(whole_population_tournament):
    strategy = whole_population_tournament
    state = state_with(strategy, [[0, 0, 0, 0], [1, 0, 0, 1], [2, 0, 1, 2], [0, 0, 1, 3]], [0.5, 3.0, -1.0, 2.0])
    assert set(first_parents(strategy, state, num_asks=10)) == {1}


def test_tournament_samples_distinct_members(text_strategies):
    strategy = text_strategies["evolution"]
    # Fitness equals birth id. With two *distinct* contenders the worst member can never win,
    # and a member of rank r (0 = worst) wins with probability r / 10.
    state = state_with(strategy, np.zeros((5, strategy.space.num_genes), np.int32), np.arange(5.0))
    counts = np.bincount(first_parents(strategy, state, num_asks=200), minlength=5)
    assert counts[0] == 0
    np.testing.assert_allclose(counts / counts.sum(), [0.0, 0.1, 0.2, 0.3, 0.4], atol=0.06)


def test_tied_tournament_picks_uniformly_among_filled_members(whole_population_tournament):
    strategy = whole_population_tournament
    # Two of four slots filled: children 0 and 1 fill them, child 2 breeds from a tournament of the two
    # filled members (fewer than sample_size), whose tie must be broken at random.
    state = state_with(strategy, np.zeros((2, 4), np.int32), [1.0, 1.0])
    counts = np.bincount(first_parents(strategy, state, num_asks=200), minlength=2)
    assert len(counts) == 2  # never an empty slot
    assert counts.min() > 0.4 * counts.sum()


def test_tournament_never_picks_an_empty_slot(always_crossover):
    strategy = always_crossover
    # One member in two slots: child 0 fills the empty slot, child 1 breeds from the only member.
    state = state_with(strategy, np.ones((1, 12), np.int32), [-1.0])
    parent_pairs = np.stack([np.asarray(strategy.ask(jax.random.key(seed), state)[1][1]) for seed in range(20)])
    np.testing.assert_array_equal(parent_pairs, 0)


def test_mutation_changes_at_least_one_gene_and_stays_in_range():
    space = small_space()
    genome = jnp.array([2, 0, 1, 4], jnp.int32)
    keys = jax.random.split(jax.random.key(0), 2000)

    def mutate_one(key, rate):
        return strategies.mutate(key, genome, space.num_choices, rate)

    mutate_many = jax.jit(jax.vmap(mutate_one, in_axes=(0, None)))
    for mutation_rate in (0.0, 0.5, 1.0):
        mutants = np.asarray(mutate_many(keys, mutation_rate))
        num_changed = (mutants != np.asarray(genome)).sum(axis=1)
        assert num_changed.min() >= 1
        assert np.all((mutants >= 0) & (mutants < space.num_choices))
        assert np.all(mutants[:, 1] == 0)  # the single-choice gene never moves
        if mutation_rate == 0.0:
            assert num_changed.max() == 1
            # The forced change picks among the three movable genes, then among the other values.
            assert np.all(np.bincount(np.argmax(mutants != np.asarray(genome), axis=1), minlength=4)[[0, 2, 3]] > 550)
            assert set(np.unique(mutants[mutants[:, 3] != 4, 3])) == {0, 1, 2, 3}
        if mutation_rate == 1.0:
            assert np.all(num_changed == 3)


def test_crossover_takes_each_gene_from_a_parent():
    first = jnp.arange(8, dtype=jnp.int32)
    second = first + 10
    cross_many = jax.jit(jax.vmap(strategies.crossover, in_axes=(0, None, None)))
    children = np.asarray(cross_many(jax.random.split(jax.random.key(0), 1000), first, second))
    from_first = children == np.asarray(first)
    assert np.all(from_first | (children == np.asarray(second)))
    assert 0.45 < from_first.mean() < 0.55


def test_crossover_children_name_two_parents_and_inherit_from_them(always_crossover):
    strategy = always_crossover
    state = state_with(strategy, [np.zeros(12, np.int32), np.ones(12, np.int32)], [1.0, 1.0])
    asked = [strategy.ask(jax.random.key(seed), state) for seed in range(100)]
    children = np.concatenate([np.asarray(children) for children, _ in asked])
    parents = np.concatenate([np.asarray(parents) for _, parents in asked])
    assert np.all(parents >= 0)
    # Children of the all-0 and the all-1 member mix both; children of one member are one flip from it.
    two_parents = parents[:, 0] != parents[:, 1]
    ones = children.sum(axis=1)
    assert 50 < two_parents.sum() < 150
    assert np.mean((ones[two_parents] > 1) & (ones[two_parents] < 11)) > 0.95
    assert np.all(np.minimum(ones[~two_parents], 12 - ones[~two_parents]) == 1)


def test_diverged_child_never_wins_or_becomes_best(whole_population_tournament):
    strategy = whole_population_tournament
    state = state_with(strategy, np.eye(4, dtype=np.int32), [jnp.nan, jnp.inf, -1e30, -jnp.inf])
    np.testing.assert_array_equal(np.isneginf(state.fitness), [True, True, False, True])
    index, fitness = strategies.best(state)
    assert int(index) == 2 and float(fitness) == np.float32(-1e30)
    assert set(first_parents(strategy, state, num_asks=10)) == {2}


def test_all_diverged_population_breeds_no_child_from_them(whole_population_tournament):
    # A diverged (or constraint-breaking) member is never a parent: with no feasible member, children are random.
    strategy = whole_population_tournament
    state = state_with(strategy, np.zeros((4, 4), np.int32), [jnp.nan] * 4)
    children, parents = strategy.ask(jax.random.key(0), state)
    assert np.all(np.asarray(parents) == strategies.NO_ID)
    assert np.asarray(children).any()  # random genomes, not one-gene mutants of the all-zero members


def test_infeasible_member_is_never_a_parent_even_when_it_fills_a_tournament(whole_population_tournament):
    strategy = whole_population_tournament
    state = state_with(strategy, np.eye(4, dtype=np.int32), [-jnp.inf, -jnp.inf, -jnp.inf, 0.1])
    assert set(first_parents(strategy, state, num_asks=20)) == {int(state.ids[3])}


def test_same_key_gives_same_children(text_strategies):
    for strategy in text_strategies.values():
        state = strategy.init()
        for generation in range(4):  # spans filling and breeding
            key = jax.random.key(generation)
            first, parents_first = strategy.ask(key, state)
            second, parents_second = strategy.ask(key, state)
            np.testing.assert_array_equal(first, second)
            np.testing.assert_array_equal(parents_first, parents_second)
            other, _ = strategy.ask(jax.random.key(100 + generation), state)
            assert not np.array_equal(first, other)
            state = strategy.tell(state, first, sum_of_genes(first))


def test_random_search_gives_random_children_and_records_like_evolution(text_strategies):
    strategy = text_strategies["random"]
    state = strategy.init()
    for generation in range(4):
        children, parents = strategy.ask(jax.random.key(generation), state)
        assert np.all(parents == NO_ID)
        assert np.all((np.asarray(children) >= 0) & (np.asarray(children) < strategy.space.num_choices))
        state = strategy.tell(state, children, sum_of_genes(children))
    # Eight children through five slots: the three oldest were replaced in birth order.
    np.testing.assert_array_equal(state.ids, [5, 6, 7, 3, 4])
    assert int(state.size) == 5 and int(state.generation) == 4


def test_ask_and_tell_do_not_retrace_across_generations(text_strategies):
    for name, strategy in text_strategies.items():
        state = strategy.init()
        cache_sizes = []
        for generation in range(6):  # spans filling, the first breeding and replacement
            children, _ = strategy.ask(jax.random.key(generation), state)
            state = strategy.tell(state, children, sum_of_genes(children))
            cache_sizes.append((strategy.ask._cache_size(), strategy.tell._cache_size()))
        # Compare with the first generation, since other tests may already have compiled other shapes.
        assert cache_sizes == [cache_sizes[0]] * 6, name


def make_run(strategy, num_generations):
    """A whole search as one pure function of a key; returns the final state and the best fitness told."""

    def run(key):
        def generation(carry, step):
            state, best_so_far = carry
            children, _ = strategy.ask(jax.random.fold_in(key, step), state)
            fitness = sum_of_genes(children)
            return (strategy.tell(state, children, fitness), jnp.maximum(best_so_far, fitness.max())), None

        initial = (strategy.init(), jnp.array(-jnp.inf, jnp.float32))
        (state, best_so_far), _ = jax.lax.scan(generation, initial, jnp.arange(num_generations))
        return state, best_so_far

    return run


def test_strategy_runs_inside_lax_scan():
    space = text_classifier_space()
    seeds = jax.random.split(jax.random.key(0), 4)
    settings = {"population_size": 20, "num_children_per_generation": 4}
    evolution = AgingEvolution(space, sample_size=5, mutation_rate=0.02, crossover_rate=0.3, **settings)
    random_search = RandomSearch(space, **settings)
    num_generations = 40

    evolution_state, evolution_best = jax.jit(jax.vmap(make_run(evolution, num_generations)))(seeds)
    _, random_best = jax.jit(jax.vmap(make_run(random_search, num_generations)))(seeds)

    assert evolution_state.genomes.shape == (4, 20, space.num_genes)
    np.testing.assert_array_equal(evolution_state.generation, num_generations)
    np.testing.assert_array_equal(evolution_state.next_id, num_generations * 4)
    assert np.all(evolution_best > random_best)
    # The final population holds at most the best ever told; older champions may have aged out.
    assert np.all(jax.vmap(strategies.best)(evolution_state)[1] <= evolution_best)


def test_bad_settings_raise_clear_errors():
    space = small_space()
    with pytest.raises(ValueError, match="sample_size"):
        AgingEvolution(space, population_size=4, sample_size=5, num_children_per_generation=1)
    with pytest.raises(ValueError, match="sample_size"):
        AgingEvolution(space, population_size=4, sample_size=0, num_children_per_generation=1)
    with pytest.raises(ValueError, match="population_size"):
        AgingEvolution(space, population_size=0, sample_size=1, num_children_per_generation=1)
    with pytest.raises(ValueError, match="num_children_per_generation"):
        AgingEvolution(space, population_size=4, sample_size=2, num_children_per_generation=5)
    with pytest.raises(ValueError, match="num_children_per_generation"):
        RandomSearch(space, population_size=4, num_children_per_generation=0)
    with pytest.raises(ValueError, match="mutation_rate"):
        AgingEvolution(space, population_size=4, sample_size=2, num_children_per_generation=1, mutation_rate=1.5)
    with pytest.raises(ValueError, match="crossover_rate"):
        AgingEvolution(space, population_size=4, sample_size=2, num_children_per_generation=1, crossover_rate=-0.1)
    with pytest.raises(ValueError, match="single choice"):
        fixed_space = SearchSpace((Gene("fixed", ("only",)),))
        AgingEvolution(fixed_space, population_size=4, sample_size=2, num_children_per_generation=1)
    strategy = RandomSearch(space, population_size=4, num_children_per_generation=2)
    with pytest.raises(ValueError, match="tell expects"):
        strategy.tell(strategy.init(), jnp.zeros((2, 3), jnp.int32), jnp.zeros(2))
