"""evosax's strategies over integer genomes, behind evonas's ask/tell API.

evosax searches real vectors and minimizes; evonas searches integer genomes and maximizes. Each gene becomes one
real coordinate on [0, 1], cut into as many equal bins as the gene has choices: a candidate `x` is the genome
`clip(floor(x * n), 0, n - 1)`, and a genome is told back as the centres of its bins, `(g + 0.5) / n`, so the
algorithm learns from the point that was actually evaluated. Fitness is negated; NaN and inf (a diverged child)
become +inf, evosax's worst.

evosax's `ask` may update its state (CMA-ES caches the eigendecomposition of C there). evonas's `ask` returns no
state, so `tell` repeats that bookkeeping first; for the algorithms wrapped here it does not depend on the key,
which `test_evosax_ask_bookkeeping_does_not_depend_on_the_key` checks.
"""

import contextlib
from typing import Any

import evosax.algorithms as evosax_algorithms
import jax
import jax.numpy as jnp
import optax
from flax import struct

from evonas.space import SearchSpace
from evonas.strategies import NO_ID, Genomes, Parents, Strategy

_TELL_KEY = 0  # evosax's tell takes a key only for its metrics, which evonas does not read


@struct.dataclass
class EvosaxState:
    """An evosax algorithm's own state, plus the counters every evonas strategy keeps."""

    inner: Any  # the evosax algorithm's State
    next_id: jax.Array  # int32[]: birth id the next told child gets
    generation: jax.Array  # int32[]: number of tell calls so far


def _strong(tree):
    """The same arrays without weak types, so that a state after `tell` has the type `init` gave it."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, dtype=jnp.asarray(leaf).dtype), tree)


@contextlib.contextmanager
def _evosax_rules():
    """evosax is written for JAX's default promotion rules; evonas's tests trace under strict ones."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


class EvosaxStrategy(Strategy):
    """Shared wrapping: the gene <-> real mapping, sign of fitness, and the evonas counters.

    A subclass sets `self.algorithm` (an evosax algorithm whose population size is the number of children per
    generation) and `self.params`, and says how the first generation is made (`_first_ask`, `_first_tell`).
    """

    algorithm: Any
    params: Any
    state_type = EvosaxState

    def __init__(self, space: SearchSpace, num_children_per_generation: int):
        super().__init__(space, num_children_per_generation, num_children_per_generation)
        self._num_choices = jnp.asarray(space.num_choices, jnp.float32)

    def to_genomes(self, x: jax.Array) -> Genomes:
        """Reals float32[num, num_genes] to genomes: each coordinate's bin on [0, 1]."""
        bins = jnp.floor(x * self._num_choices[None]).astype(jnp.int32)
        return jnp.clip(bins, 0, jnp.asarray(self.space.num_choices - 1)[None])

    def to_reals(self, genomes: Genomes) -> jax.Array:
        """Genomes to the centres of their bins, float32[num, num_genes]."""
        return (genomes.astype(jnp.float32) + 0.5) / self._num_choices[None]

    def init(self) -> EvosaxState:
        counters = {"next_id": jnp.array(0, jnp.int32), "generation": jnp.array(0, jnp.int32)}
        with _evosax_rules():
            inner = self._init_inner()
        return EvosaxState(inner=_strong(inner), **counters)

    def _init_inner(self):
        raise NotImplementedError

    def _ask(self, key: jax.Array, state: EvosaxState) -> tuple[Genomes, Parents]:
        """Children int32[num_children_per_generation, num_genes]; evosax names no parents, so they are NO_ID."""
        with _evosax_rules():
            x, _ = self.algorithm.ask(key, state.inner, self.params)
        children = self.to_genomes(x)
        parents = jnp.full((self.num_children_per_generation, 2), NO_ID, jnp.int32)
        return children, parents

    def _tell(self, state: EvosaxState, children: Genomes, fitness: jax.Array) -> EvosaxState:
        """Tells evosax the children (as their bins' centres) and their negated fitness."""
        children = jnp.asarray(children, jnp.int32)
        fitness = jnp.asarray(fitness, jnp.float32)
        if children.shape != (self.num_children_per_generation, self.space.num_genes) or fitness.shape != children.shape[:1]:
            raise ValueError(
                f"tell expects children int32[{self.num_children_per_generation}, {self.space.num_genes}] and fitness "
                f"float32[{self.num_children_per_generation}], got shapes {children.shape} and {fitness.shape}"
            )
        loss = jnp.where(jnp.isfinite(fitness), -fitness, jnp.inf)
        key = jax.random.key(_TELL_KEY)
        with _evosax_rules():
            _, asked = self.algorithm.ask(key, state.inner, self.params)  # the bookkeeping the real ask did
            inner, _ = self.algorithm.tell(key, self.to_reals(children), loss, asked, self.params)
        inner = jax.tree.map(lambda new, old: new.astype(old.dtype), inner, state.inner)
        return EvosaxState(inner=inner, next_id=state.next_id + self.num_children_per_generation,
                           generation=state.generation + 1)


class GeneticAlgorithm(EvosaxStrategy):
    """evosax's SimpleGA (Such et al. 2017): the better half breeds by uniform crossover and Gaussian mutation.

    The first generation is uniformly random; from then on each generation replaces the last.
    """

    def __init__(
        self,
        space: SearchSpace,
        num_children_per_generation: int,
        crossover_rate: float = 0.5,  # share of genes from the second parent; 0.5 is uniform crossover
        mutation_std: float = 0.1,  # on [0, 1] per gene: a gene of n choices moves with probability ~ n * 0.08
    ):
        super().__init__(space, num_children_per_generation)
        if not 0.0 <= crossover_rate <= 1.0:
            raise ValueError(f"crossover_rate must be a probability in [0, 1], got {crossover_rate}")
        if mutation_std <= 0:
            raise ValueError(f"mutation_std must be positive, got {mutation_std}")
        self.crossover_rate = crossover_rate
        self.mutation_std = mutation_std
        solution = jnp.zeros(space.num_genes, jnp.float32)
        self.algorithm = evosax_algorithms.SimpleGA(
            num_children_per_generation, solution, std_schedule=optax.constant_schedule(mutation_std))
        with _evosax_rules():
            self.params = self.algorithm.default_params.replace(crossover_rate=crossover_rate)

    def _init_inner(self):
        # A stand-in population, replaced by the first told generation (see `_tell`).
        x = jnp.full((self.num_children_per_generation, self.space.num_genes), 0.5, jnp.float32)
        loss = jnp.full((self.num_children_per_generation,), jnp.inf, jnp.float32)
        return self.algorithm.init(jax.random.key(0), x, loss, self.params)

    def _ask(self, key: jax.Array, state: EvosaxState) -> tuple[Genomes, Parents]:
        """Uniformly random children in the first generation, bred ones after."""
        children, parents = super()._ask(key, state)
        random = jax.vmap(self.space.sample)(jax.random.split(key, self.num_children_per_generation))
        return jnp.where(state.generation == 0, random, children), parents

    def _tell(self, state: EvosaxState, children: Genomes, fitness: jax.Array) -> EvosaxState:
        """The first generation becomes the GA's population as evosax's `init` takes it; later ones through `tell`."""
        told = super()._tell(state, children, fitness)
        loss = jnp.where(jnp.isfinite(fitness), -jnp.asarray(fitness, jnp.float32), jnp.inf)
        with _evosax_rules():
            first = self.algorithm.init(jax.random.key(0), self.to_reals(jnp.asarray(children, jnp.int32)), loss,
                                        self.params)
        first = jax.tree.map(lambda new, old: new.astype(old.dtype), first, state.inner)
        inner = jax.tree.map(lambda a, b: jnp.where(state.generation == 0, a, b), first, told.inner)
        return told.replace(inner=inner)


class CMAES(EvosaxStrategy):
    """evosax's CMA-ES (Hansen 2016) on the genes' [0, 1] coordinates, starting at the centre of the space."""

    def __init__(
        self,
        space: SearchSpace,
        num_children_per_generation: int,
        std_init: float = 0.3,  # on [0, 1] per gene: the first generation spreads over most choices
    ):
        super().__init__(space, num_children_per_generation)
        if num_children_per_generation < 2:
            raise ValueError(f"CMA-ES needs at least 2 children per generation, got {num_children_per_generation}")
        if std_init <= 0:
            raise ValueError(f"std_init must be positive, got {std_init}")
        self.std_init = std_init
        self.algorithm = evosax_algorithms.CMA_ES(num_children_per_generation, jnp.zeros(space.num_genes, jnp.float32))
        with _evosax_rules():
            self.params = self.algorithm.default_params.replace(std_init=jnp.asarray(std_init, jnp.float32))

    def _init_inner(self):
        return self.algorithm.init(jax.random.key(0), jnp.full((self.space.num_genes,), 0.5, jnp.float32), self.params)


EVOSAX_STRATEGIES: dict[str, type[EvosaxStrategy]] = {"ga": GeneticAlgorithm, "cma_es": CMAES}

__all__ = ["CMAES", "EVOSAX_STRATEGIES", "EvosaxState", "EvosaxStrategy", "GeneticAlgorithm"]
