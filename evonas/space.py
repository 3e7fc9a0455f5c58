"""Search spaces: named integer genes, each choosing from a finite list of options.

A genome is an int32 array with one entry per gene: the index of the chosen option.
Shapes never depend on a genome, so one compiled program can serve every genome.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import ACTIVATION_FNS, OPS

Genome = jax.Array  # int32[num_genes]


@dataclasses.dataclass(frozen=True)
class Gene:
    """One named decision with a finite tuple of choices."""

    name: str
    choices: tuple[Any, ...]

    def __post_init__(self):
        if not self.choices:
            raise ValueError(f"gene {self.name!r} has no choices")
        object.__setattr__(self, "choices", tuple(self.choices))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of genes; the static half of every genome operation."""

    genes: tuple[Gene, ...]

    def __post_init__(self):
        object.__setattr__(self, "genes", tuple(self.genes))
        names = [gene.name for gene in self.genes]
        if len(set(names)) != len(names):
            raise ValueError(f"gene names repeat: {names}")

    @property
    def num_genes(self) -> int:
        return len(self.genes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(gene.name for gene in self.genes)

    @property
    def num_choices(self) -> np.ndarray:
        """int32[num_genes]: how many options each gene has."""
        return np.array([len(gene.choices) for gene in self.genes], dtype=np.int32)

    @property
    def size(self) -> int:
        """The number of distinct genomes in the space."""
        return math.prod(len(gene.choices) for gene in self.genes)

    def index(self, name: str) -> int:
        """Position of the gene called `name` in a genome."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no gene named {name!r}; genes are {list(self.names)}") from None

    def gene(self, name: str) -> Gene:
        return self.genes[self.index(name)]

    def sample(self, key: jax.Array, num: int | None = None) -> jax.Array:
        """Uniform random genomes: int32[num_genes], or int32[num, num_genes] if `num` is given."""
        shape = (self.num_genes,) if num is None else (num, self.num_genes)
        return jax.random.randint(key, shape, 0, jnp.broadcast_to(jnp.asarray(self.num_choices), shape), dtype=jnp.int32)

    def validate(self, genome: Sequence[int] | np.ndarray) -> np.ndarray:
        """Returns the genome as int32 numpy, or raises a ValueError naming the bad gene."""
        values = np.asarray(genome)
        if values.shape != (self.num_genes,):
            raise ValueError(f"genome has shape {values.shape}, expected ({self.num_genes},) for genes {list(self.names)}")
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"genome must hold integers, got dtype {values.dtype}")
        for gene, value in zip(self.genes, values):
            if not 0 <= value < len(gene.choices):
                raise ValueError(
                    f"gene {gene.name!r} has value {int(value)}, allowed range is 0..{len(gene.choices) - 1} "
                    f"(choices {list(gene.choices)})"
                )
        return values.astype(np.int32)

    def decode(self, genome: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """The chosen option of every gene, by name."""
        values = self.validate(genome)
        return {gene.name: gene.choices[int(value)] for gene, value in zip(self.genes, values)}

    def encode(self, choices: Mapping[str, Any]) -> np.ndarray:
        """The inverse of `decode`: a genome from the chosen option of every gene."""
        unknown = set(choices) - set(self.names)
        if unknown:
            raise ValueError(f"unknown genes {sorted(unknown)}; genes are {list(self.names)}")
        genome = []
        for gene in self.genes:
            if gene.name not in choices:
                raise ValueError(f"gene {gene.name!r} is missing")
            if choices[gene.name] not in gene.choices:
                raise ValueError(f"gene {gene.name!r} has value {choices[gene.name]!r}, allowed are {list(gene.choices)}")
            genome.append(gene.choices.index(choices[gene.name]))
        return np.array(genome, dtype=np.int32)

    def to_json(self) -> list[dict[str, Any]]:
        """The space itself as JSON-ready data, so a run directory records what its genomes mean."""
        return [{"name": gene.name, "choices": list(gene.choices)} for gene in self.genes]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> "SearchSpace":
        return cls(tuple(Gene(item["name"], tuple(item["choices"])) for item in data))


ACTIVATIONS = tuple(ACTIVATION_FNS)
NORMS = ("layernorm", "rmsnorm", "none")


def text_classifier_space(
    max_blocks: int = 6,
    ops: Sequence[str] = OPS,
    activations: Sequence[str] = ACTIVATIONS,
    norms: Sequence[str] = NORMS,
    widths: Sequence[int] = (32, 64, 96, 128),
    heads: Sequence[int] = (1, 2, 4, 8),
    ffn_expansions: Sequence[int] = (1, 2, 4),
    dropouts: Sequence[float] = (0.0, 0.1, 0.2),
    positionals: Sequence[str] = ("learned", "sinusoidal", "none"),
    poolings: Sequence[str] = ("mean", "max", "first", "last"),
    learning_rates: Sequence[float] = (3e-4, 1e-3, 3e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2),
    optimizers: Sequence[str] = ("adamw", "lion", "sgd"),
) -> SearchSpace:
    """The text-classifier space that `evonas.models` decodes (its ops: `evonas.layers.OP_FAMILIES`); narrow any
    gene by passing fewer choices."""
    for name, allowed, given in (("op", OPS, ops), ("activation", ACTIVATIONS, activations), ("norm", NORMS, norms)):
        if unknown := set(given) - set(allowed):
            raise ValueError(f"unknown {name} choices {sorted(unknown)}; allowed are {list(allowed)}")
    for width in widths:
        for head_count in heads:
            if width % head_count:
                raise ValueError(f"width {width} is not divisible by {head_count} attention heads")
    genes = [Gene("num_blocks", tuple(range(1, max_blocks + 1)))]
    for block in range(max_blocks):
        genes += [
            Gene(f"block{block}_op", tuple(ops)),
            Gene(f"block{block}_activation", tuple(activations)),
            Gene(f"block{block}_norm", tuple(norms)),
        ]
    genes += [
        Gene("width", tuple(widths)),
        Gene("heads", tuple(heads)),
        Gene("ffn_expansion", tuple(ffn_expansions)),
        Gene("dropout", tuple(dropouts)),
        Gene("positional", tuple(positionals)),
        Gene("pooling", tuple(poolings)),
        Gene("learning_rate", tuple(learning_rates)),
        Gene("weight_decay", tuple(weight_decays)),
        Gene("optimizer", tuple(optimizers)),
    ]
    return SearchSpace(tuple(genes))
