"""Ask/tell search strategies over integer genomes: aging evolution, random search, and evosax's (registered here).

A strategy object holds only static settings; everything that changes between generations lives in
`State`, so `ask` and `tell` compile once, run inside `lax.scan`, and `vmap` over seeds. A checkpoint
of a search is just the `State` pytree.

    strategy = AgingEvolution(space, population_size=64, sample_size=16, num_children_per_generation=8)
    state = strategy.init()
    for generation in range(100):
        children, parents = strategy.ask(jax.random.fold_in(key, generation), state)
        state = strategy.tell(state, children, evaluate(children))
"""

import collections.abc
import inspect
import types
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from evonas import pareto
from evonas.space import Genome, SearchSpace

Genomes = jax.Array  # int32[num, num_genes]
Parents = jax.Array  # int32[num, 2]: birth ids of the parents, NO_ID where there is none

NO_ID = -1  # marks an empty slot in `State.ids` and a missing parent in `ask`'s parents


@struct.dataclass
class State:
    """Everything a strategy changes between generations."""

    genomes: jax.Array  # int32[population_size, num_genes]; rows at and beyond `size` are unused
    fitness: jax.Array  # float32[population_size] (Pareto: [population_size, num_objectives]); -inf marks an
    # empty slot or a member that is not feasible (diverged, or broke a constraint; see evonas.fitness)
    ids: jax.Array  # int32[population_size]; birth id of each member (smaller is older), NO_ID when empty
    size: jax.Array  # int32[]: filled slots, always the first `size` rows
    next_id: jax.Array  # int32[]: birth id the next told child gets
    generation: jax.Array  # int32[]: number of tell calls so far


def crossover(key: jax.Array, first: Genome, second: Genome) -> Genome:
    """Uniform crossover: each gene comes from either parent with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key, 0.5, first.shape), first, second)


def mutate(key: jax.Array, genome: Genome, num_choices: np.ndarray, mutation_rate: float) -> Genome:
    """Moves each gene to a different value with probability `mutation_rate`, and always moves at least one.

    The forced gene is drawn uniformly among genes with more than one choice, so a child never
    repeats its parent. `num_choices` is the static int32[num_genes] of the search space.
    """
    key_rate, key_forced, key_offsets = jax.random.split(key, 3)
    num_genes = genome.shape[0]
    mutable_genes = np.flatnonzero(num_choices > 1)
    forced_gene = jnp.asarray(mutable_genes)[jax.random.randint(key_forced, (), 0, len(mutable_genes))]
    is_resampled = jax.random.bernoulli(key_rate, mutation_rate, (num_genes,))
    changes = jnp.asarray(num_choices > 1) & (is_resampled | (jnp.arange(num_genes) == forced_gene))
    # An offset in 1..n-1 modulo n lands uniformly on one of the other n-1 values.
    max_offsets = jnp.asarray(np.maximum(num_choices, 2))  # exclusive bound; 2 keeps single-choice genes valid
    offsets = jax.random.randint(key_offsets, (num_genes,), 1, max_offsets, dtype=jnp.int32)
    return jnp.where(changes, (genome + offsets) % jnp.asarray(num_choices), genome)


def is_feasible(fitness: jax.Array) -> jax.Array:
    """bool[num] of fitness float32[num] or float32[num, K]: every value finite (-inf marks the infeasible)."""
    return jnp.isfinite(fitness) if fitness.ndim == 1 else jnp.all(jnp.isfinite(fitness), axis=-1)


def best(state: State) -> tuple[jax.Array, jax.Array]:
    """Slot and fitness of the fittest *current* member; the fitness is -inf if no member is finite.

    Aging evolution discards old members however good they were, so the best genome ever seen
    must be tracked by the caller from what it tells, not read from the final state.
    """
    index = jnp.argmax(state.fitness)
    return index, state.fitness[index]


class Strategy:
    """Shared bookkeeping: settings checks, the `State` record, `tell`, and the jitted wrappers.

    Subclasses implement `_ask`. `ask` and `tell` are `jax.jit` of bound methods, so the static
    settings on `self` are closed over and each compiles once per strategy instance. Each strategy owns its
    state type (`state_type`, what `init` returns): a search loop reads only `next_id` and `generation` of it,
    and a checkpoint saves it whole.
    """

    state_type: ClassVar[type] = State

    def __init__(self, space: SearchSpace, population_size: int, num_children_per_generation: int,
                 num_objectives: int = 0):
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= num_children_per_generation <= population_size:
            raise ValueError(
                f"num_children_per_generation must be between 1 and population_size={population_size}, "
                f"got {num_children_per_generation}; otherwise one generation would overwrite its own children"
            )
        if num_objectives < 0:
            raise ValueError(f"num_objectives must be 0 (one fitness per member) or more, got {num_objectives}")
        self.space = space
        self.population_size = population_size
        self.num_children_per_generation = num_children_per_generation
        self.fitness_shape = (num_objectives,) if num_objectives else ()  # of one member's fitness
        self.ask = jax.jit(self._ask)
        self.tell = jax.jit(self._tell)

    def init(self) -> State:
        """An empty population: every slot has fitness -inf and id NO_ID."""
        return State(
            genomes=jnp.zeros((self.population_size, self.space.num_genes), jnp.int32),
            fitness=jnp.full((self.population_size, *self.fitness_shape), -jnp.inf, jnp.float32),
            ids=jnp.full((self.population_size,), NO_ID, jnp.int32),
            size=jnp.array(0, jnp.int32),
            next_id=jnp.array(0, jnp.int32),
            generation=jnp.array(0, jnp.int32),
        )

    def _ask(self, key: jax.Array, state: State) -> tuple[Genomes, Parents]:
        """Children int32[num_children_per_generation, num_genes] and their parents' ids int32[..., 2]."""
        raise NotImplementedError

    def _tell(self, state: State, children: Genomes, fitness: jax.Array) -> State:
        """Records evaluated children in order: fill empty slots first, then replace the oldest members.

        Args:
          state: the state `children` were asked from (or any later one).
          children: int32[num, num_genes], usually the genomes `ask` returned.
          fitness: float32[num], higher is better; NaN and inf are stored as -inf, the worst. With `num_objectives`
            K > 0, float32[num, K], each column maximized, and a row with any NaN or inf is stored all -inf.

        Returns:
          The new state; children get birth ids `next_id, next_id + 1, ...` and `generation` grows by one.
        """
        children = jnp.asarray(children, jnp.int32)
        fitness = jnp.asarray(fitness, jnp.float32)
        if (children.ndim != 2 or children.shape[1] != self.space.num_genes
                or fitness.shape != (*children.shape[:1], *self.fitness_shape)):
            raise ValueError(
                f"tell expects children int32[num, {self.space.num_genes}] and fitness float32[num"
                f"{''.join(f', {n}' for n in self.fitness_shape)}], got shapes {children.shape} and {fitness.shape}"
            )
        feasible = is_feasible(fitness).reshape(-1, *(1 for _ in self.fitness_shape))
        fitness = jnp.where(feasible, fitness, -jnp.inf)

        def insert(state: State, child: tuple[Genome, jax.Array]) -> tuple[State, None]:
            genome, value = child
            # Once the population is full every id is a real birth id, so the smallest is the oldest.
            slot = jnp.where(state.size < self.population_size, state.size, jnp.argmin(state.ids))
            state = state.replace(
                genomes=state.genomes.at[slot].set(genome),
                fitness=state.fitness.at[slot].set(value),
                ids=state.ids.at[slot].set(state.next_id),
                size=jnp.minimum(state.size + 1, self.population_size),
                next_id=state.next_id + 1,
            )
            return state, None

        state, _ = jax.lax.scan(insert, state, (children, fitness))
        return state.replace(generation=state.generation + 1)


class AgingEvolution(Strategy):
    """Regularized (aging) evolution, Real et al. 2019, with batches of children.

    Parents come from tournaments; the oldest member, not the worst, dies. All children of one
    `ask` select their parents from the same state; `num_children_per_generation=1` is the
    classic algorithm, larger batches let a generation be trained as one vmapped step.

    Only feasible members (finite fitness) enter a tournament, so a diverged child or one that broke a constraint
    is never a parent; a child whose tournament finds no feasible member is drawn at random. With
    `num_objectives` K > 0 (Pareto mode) the fitness has K maximized columns and a tournament is won as in NSGA-II:
    lowest non-dominated rank in the current population, then largest crowding distance (`evonas.pareto`).
    """

    def __init__(
        self,
        space: SearchSpace,
        population_size: int,
        sample_size: int,
        num_children_per_generation: int,
        mutation_rate: float = 0.0,  # per-gene; 0 means exactly one gene changes, as in Real et al.
        crossover_rate: float = 0.0,  # Real et al. use mutation only
        num_objectives: int = 0,  # 0: one fitness per member; K > 0: Pareto selection over K objectives
    ):
        super().__init__(space, population_size, num_children_per_generation, num_objectives)
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size must be between 1 and population_size={population_size}, got {sample_size}")
        for name, rate in (("mutation_rate", mutation_rate), ("crossover_rate", crossover_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {rate}")
        if not np.any(space.num_choices > 1):
            raise ValueError("every gene of the search space has a single choice, so mutation cannot change a genome")
        self.sample_size = sample_size
        self.mutation_rate = mutation_rate
        self.crossover_rate = crossover_rate

    def _ask(self, key: jax.Array, state: State) -> tuple[Genomes, Parents]:
        """A generation of children to evaluate.

        Args:
          key: PRNG key; the same key and state give the same children.
          state: the current population.

        Returns:
          children: int32[num_children_per_generation, num_genes]. Child j is uniformly random while
            `state.size + j < population_size`, otherwise bred from tournament winners and mutated.
          parents: int32[num_children_per_generation, 2], birth ids of the parents, NO_ID where none.
        """
        keys = jax.random.split(key, self.num_children_per_generation)
        positions = jnp.arange(self.num_children_per_generation, dtype=jnp.int32)
        ranking = self._ranking(state)
        return jax.vmap(self._make_child, in_axes=(0, None, None, 0))(keys, state, ranking, positions)

    def _ranking(self, state: State) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per slot: feasible (filled, finite fitness), and two keys a tournament minimizes in turn.

        One fitness: the negated fitness, then 0. Pareto: the non-dominated rank, then the negated crowding distance.
        """
        feasible = (jnp.arange(self.population_size) < state.size) & is_feasible(state.fitness)
        if not self.fitness_shape:
            return feasible, jnp.where(feasible, -state.fitness, jnp.inf), jnp.zeros_like(state.fitness)
        rank, crowding = pareto.ranks_and_crowding(state.fitness, feasible)
        return feasible, rank.astype(jnp.float32), -crowding

    def _make_child(self, key: jax.Array, state: State, ranking, position: jax.Array) -> tuple[Genome, jax.Array]:
        """The child at `position` in the batch: random while the population fills or has no feasible member,
        else bred from feasible parents."""
        key_random, key_first, key_second, key_use_crossover, key_crossover, key_mutate = jax.random.split(key, 6)
        feasible = ranking[0]
        first = self._tournament(key_first, ranking)
        second = self._tournament(key_second, ranking)
        use_crossover = jax.random.bernoulli(key_use_crossover, self.crossover_rate) & feasible[second]
        crossed = crossover(key_crossover, state.genomes[first], state.genomes[second])
        before_mutation = jnp.where(use_crossover, crossed, state.genomes[first])
        bred = mutate(key_mutate, before_mutation, self.space.num_choices, self.mutation_rate)
        bred_parents = jnp.stack([state.ids[first], jnp.where(use_crossover, state.ids[second], NO_ID)])

        is_random = (state.size + position < self.population_size) | ~feasible[first]
        child = jnp.where(is_random, self.space.sample(key_random), bred)
        parents = jnp.where(is_random, NO_ID, bred_parents)
        return child, parents

    def _tournament(self, key: jax.Array, ranking) -> jax.Array:
        """Slot of the best of `sample_size` distinct feasible members drawn uniformly (by `_ranking`'s keys).

        If fewer than `sample_size` members are feasible (a batch that is not a divisor of the population can breed
        before the population is full; members diverge or break constraints) the tournament is among all of them,
        and the winner is infeasible only if none is feasible. Ties go to the contender drawn first, so they are
        broken at random but fixed by the key.
        """
        feasible, primary, secondary = ranking
        # Random scores with infeasible slots pushed below every feasible one: the top `sample_size` slots are a
        # uniform sample of feasible members, in random order, and an infeasible slot comes after all of them.
        scores = jnp.where(feasible, jax.random.uniform(key, (self.population_size,)), -1.0)
        _, contenders = jax.lax.top_k(scores, self.sample_size)
        first_keys = primary[contenders]
        tied = first_keys == jnp.min(first_keys)
        return contenders[jnp.argmin(jnp.where(tied, secondary[contenders], jnp.inf))]


class RandomSearch(Strategy):
    """Uniform random genomes every generation; the baseline any search must beat.

    `population_size` only sizes the `State` record, which `tell` keeps exactly as aging evolution
    does, so a search loop can treat both strategies alike.
    """

    def _ask(self, key: jax.Array, state: State) -> tuple[Genomes, Parents]:
        """Uniform random children int32[num_children_per_generation, num_genes], and parents all NO_ID."""
        del state  # random search ignores the population
        keys = jax.random.split(key, self.num_children_per_generation)
        children = jax.vmap(self.space.sample)(keys)
        parents = jnp.full((self.num_children_per_generation, 2), NO_ID, jnp.int32)
        return children, parents


class _Strategies(collections.abc.Mapping):
    """Strategy classes by name. evosax's are imported when first asked for, so that evonas runs where evosax
    is not installed (e.g. an accelerator image) for as long as no evosax strategy is used."""

    _own: types.MappingProxyType = types.MappingProxyType({"evolution": AgingEvolution, "random": RandomSearch})
    _evosax = ("ga", "cma_es")

    def __getitem__(self, name: str) -> type[Strategy]:
        if name in self._own:
            return self._own[name]
        if name not in self._evosax:
            raise KeyError(name)
        from evonas.evosax_strategies import EVOSAX_STRATEGIES  # builds on `Strategy` above

        return EVOSAX_STRATEGIES[name]

    def __iter__(self):
        return iter((*self._own, *self._evosax))

    def __len__(self) -> int:
        return len(self._own) + len(self._evosax)


STRATEGIES = _Strategies()


def make(name: str, space: SearchSpace, **settings) -> Strategy:
    """The strategy called `name`, given those of `settings` its constructor takes; the others are ignored.

    So one set of settings (a search's config) can build any strategy: random search takes no `sample_size`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(space, **{key: value for key, value in settings.items() if key in accepted})
