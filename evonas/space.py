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

from evonas.errors import SpaceError
from evonas.layers import ACTIVATION_FNS, POOLINGS
from evonas.ops import IDENTITY, OPS, family_name

Genome = jax.Array  # int32[num_genes]


@dataclasses.dataclass(frozen=True)
class Gene:
    """One named decision with a finite tuple of choices."""

    name: str
    choices: tuple[Any, ...]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SpaceError(f"a gene's name must be a non-empty string, got {self.name!r}")
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence) or not self.choices:
            raise SpaceError(f"gene {self.name!r} must have a non-empty list of choices, got {self.choices!r}")
        object.__setattr__(self, "choices", tuple(self.choices))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of genes; the static half of every genome operation."""

    genes: tuple[Gene, ...]

    def __post_init__(self):
        object.__setattr__(self, "genes", tuple(self.genes))
        names = [gene.name for gene in self.genes]
        if not names:
            raise SpaceError("a search space needs at least one gene")
        if len(set(names)) != len(names):
            raise SpaceError(f"gene names repeat: {names}")

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
        """Returns the genome as int32 numpy, or raises a SpaceError naming the bad gene."""
        try:
            values = np.asarray(genome)
        except (ValueError, TypeError, OverflowError):
            raise SpaceError(f"a genome must be a list of {self.num_genes} integers, got {genome!r}"[:300]) from None
        if values.shape != (self.num_genes,):
            raise SpaceError(f"genome has shape {values.shape}, expected ({self.num_genes},) for genes {list(self.names)}")
        if not np.issubdtype(values.dtype, np.integer):
            raise SpaceError(f"genome must hold integers, got dtype {values.dtype}")
        for gene, value in zip(self.genes, values):
            if not 0 <= value < len(gene.choices):
                raise SpaceError(
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
            raise SpaceError(f"unknown genes {sorted(unknown)}; genes are {list(self.names)}")
        genome = []
        for gene in self.genes:
            if gene.name not in choices:
                raise SpaceError(f"gene {gene.name!r} is missing")
            if choices[gene.name] not in gene.choices:
                raise SpaceError(f"gene {gene.name!r} has value {choices[gene.name]!r}, allowed are {list(gene.choices)}")
            genome.append(gene.choices.index(choices[gene.name]))
        return np.array(genome, dtype=np.int32)

    def to_json(self) -> list[dict[str, Any]]:
        """The space itself as JSON-ready data, so a run directory records what its genomes mean."""
        return [{"name": gene.name, "choices": list(gene.choices)} for gene in self.genes]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> "SearchSpace":
        """The inverse of `to_json`; anything else is a SpaceError."""
        if not isinstance(data, list) or not all(isinstance(item, dict) and set(item) == {"name", "choices"}
                                                 for item in data):
            raise SpaceError("a search space must be a list of objects with keys 'name' and 'choices'")
        return cls(tuple(Gene(item["name"], item["choices"]) for item in data))


ACTIVATIONS = tuple(ACTIVATION_FNS)
NORMS = ("layernorm", "rmsnorm", "none")
POSITIONALS = ("learned", "sinusoidal", "none")
OPTIMIZERS = ("adamw", "lion", "sgd")
MAX_BLOCKS, MAX_WIDTH = 16, 4096  # far beyond what compiles in reasonable time; they bound typos, not designs


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# The ops of the default space: every op but the bidirectional cells, which came later and are asked for by name,
# so that the built-in task's default space, and the histories recorded with it, stay as they were.
DEFAULT_OPS = tuple(op for op in OPS if op == IDENTITY or family_name(op) != "bidirectional")
# keyword of text_classifier_space -> (what each choice may be, in words; the test of one choice)
SPACE_CHOICES = {
    "ops": (f"ops among {list(OPS)}", lambda v: v in OPS),
    "activations": (f"activations among {list(ACTIVATION_FNS)}", lambda v: v in ACTIVATION_FNS),
    "norms": (f"norms among {list(NORMS)}", lambda v: v in NORMS),
    "final_norms": (f"norms among {list(NORMS)}", lambda v: v in NORMS),
    "widths": (f"even integers from 2 to {MAX_WIDTH}", lambda v: _is_int(v) and 2 <= v <= MAX_WIDTH and v % 2 == 0),
    "heads": ("integers of at least 1", lambda v: _is_int(v) and 1 <= v <= MAX_WIDTH),
    "ffn_expansions": ("integers from 1 to 16", lambda v: _is_int(v) and 1 <= v <= 16),
    "dropouts": ("numbers in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    "head_dropouts": ("numbers in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    "positionals": (f"positional encodings among {list(POSITIONALS)}", lambda v: v in POSITIONALS),
    "poolings": (f"poolings among {list(POOLINGS)}", lambda v: v in POOLINGS),
    "learning_rates": ("numbers above 0 and at most 10", lambda v: _is_number(v) and 0 < v <= 10),
    "weight_decays": ("numbers from 0 to 10", lambda v: _is_number(v) and 0 <= v <= 10),
    "optimizers": (f"optimizers among {list(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
}


def _checked_choices(name: str, given) -> tuple:
    """The choices given for the keyword `name`, or a SpaceError saying what is allowed."""
    allowed, test = SPACE_CHOICES[name]
    if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Sequence) or not given:
        raise SpaceError(f"space option {name} must be a non-empty list of {allowed}, got {given!r}"[:300])
    for value in given:
        if not _hashable(value) or not test(value):
            raise SpaceError(f"space option {name} must be a list of {allowed}, got {value!r} in it"[:300])
    if len(set(given)) != len(given):
        raise SpaceError(f"space option {name} repeats a choice: {list(given)}")
    return tuple(given)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def text_classifier_space(
    max_blocks: int = 6,
    ops: Sequence[str] = DEFAULT_OPS,
    activations: Sequence[str] = ACTIVATIONS,
    norms: Sequence[str] = NORMS,
    widths: Sequence[int] = (32, 64, 96, 128),
    heads: Sequence[int] = (1, 2, 4, 8),
    ffn_expansions: Sequence[int] = (1, 2, 4),
    dropouts: Sequence[float] = (0.0, 0.1, 0.2),
    positionals: Sequence[str] = POSITIONALS,
    poolings: Sequence[str] = POOLINGS,
    learning_rates: Sequence[float] = (3e-4, 1e-3, 3e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2),
    optimizers: Sequence[str] = OPTIMIZERS,
    final_norms: Sequence[str] | None = None,
    head_dropouts: Sequence[float] | None = None,
) -> SearchSpace:
    """The text-classifier space that `evonas.models` decodes (its ops: `evonas.ops.OP_FAMILIES`); narrow any
    gene by passing fewer choices.

    `final_norms` adds a gene for the norm between the last block and the pooling; without it every model has a
    LayerNorm there. Without one, a bag of words keeps each word vector's length, which is how much the word
    counts: on MR's validation split that was worth about a point (experiments/README.md, "The final norm on MR").
    `head_dropouts` adds a gene for the dropout rate of the pooled features before the head, as Kim (2014)'s CNN
    has it; without it they are not dropped.

    Raises:
        SpaceError: naming the keyword and what it allows.
    """
    if not _is_int(max_blocks) or not 1 <= max_blocks <= MAX_BLOCKS:
        raise SpaceError(f"space option max_blocks must be an integer from 1 to {MAX_BLOCKS}, got {max_blocks!r}")
    given = {"ops": ops, "activations": activations, "norms": norms, "widths": widths, "heads": heads,
             "ffn_expansions": ffn_expansions, "dropouts": dropouts, "positionals": positionals,
             "poolings": poolings, "learning_rates": learning_rates, "weight_decays": weight_decays,
             "optimizers": optimizers}
    (ops, activations, norms, widths, heads, ffn_expansions, dropouts, positionals, poolings, learning_rates,
     weight_decays, optimizers) = (_checked_choices(name, value) for name, value in given.items())
    final = () if final_norms is None else (Gene("final_norm", _checked_choices("final_norms", final_norms)),)
    head = () if head_dropouts is None else (Gene("head_dropout", _checked_choices("head_dropouts", head_dropouts)),)
    for width in widths:
        for head_count in heads:
            if width % head_count:
                raise SpaceError(f"space option widths: width {width} is not divisible by {head_count} attention "
                                 "heads (space option heads)")
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
        *final,
        *head,
        Gene("learning_rate", tuple(learning_rates)),
        Gene("weight_decay", tuple(weight_decays)),
        Gene("optimizer", tuple(optimizers)),
    ]
    return SearchSpace(tuple(genes))
