"""The exact-size text classifier of a genome, and its cost.

`TextClassifier(arch)` is the standalone model a user trains, exports and reuses: its parameters have
exactly the shapes its architecture needs. The population forms that train many of them at once are in
`evonas.supernet` and `evonas.grouped`.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import ACTIVATION_FNS, Dense, Params, dropout, pool, sinusoidal_positions
from evonas.ops import IDENTITY, OP_FAMILIES, family_name, make_op
from evonas.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    op: str
    activation: str
    norm: str


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A decoded genome: everything that fixes a standalone model and how to train it."""

    blocks: tuple[BlockConfig, ...]
    width: int
    heads: int
    ffn_expansion: int
    dropout: float
    positional: str
    pooling: str
    learning_rate: float
    weight_decay: float
    optimizer: str
    final_norm: str = "layernorm"  # between the last block and the pooling; a space without the gene has this
    head_dropout: float = 0.0  # of the pooled features; a space without the gene has none

    @classmethod
    def from_genome(cls, space: SearchSpace, genome) -> "Architecture":
        choice = space.decode(genome)
        blocks = tuple(
            BlockConfig(choice[f"block{i}_op"], choice[f"block{i}_activation"], choice[f"block{i}_norm"])
            for i in range(choice["num_blocks"])
        )
        fields = {f.name: choice[f.name] for f in dataclasses.fields(cls) if f.name in choice}
        return cls(blocks=blocks, **fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def variant(self, op: str):
        """The value of the gene that sizes `op` (its family's `variant_gene`), or None."""
        gene = OP_FAMILIES[family_name(op)].variant_gene
        return None if gene is None else getattr(self, gene)


def make_norm(norm: str, name: str = "norm") -> nn.Module | None:
    if norm == "layernorm":
        return nn.LayerNorm(name=name)
    if norm == "rmsnorm":
        return nn.RMSNorm(name=name)
    return None


class Block(nn.Module):
    """Pre-norm residual block: x + dropout(op(norm(x))); identity blocks hold no parameters."""

    config: BlockConfig
    width: int
    variant: Any  # the op's variant gene value (heads, expansion) or None
    dropout_rate: float

    @nn.compact
    def __call__(self, x, mask, dropout_key):
        if self.config.op == IDENTITY:
            return x
        norm = make_norm(self.config.norm)
        h = norm(x) if norm is not None else x
        h = make_op(self.config.op, self.width, self.variant, ACTIVATION_FNS[self.config.activation])(h, mask)
        return (x + dropout(h, self.dropout_rate, dropout_key)) * mask[..., None]


# The dropout key of the pooled features is the model's folded with this; block i folds in i (< space.MAX_BLOCKS).
HEAD_DROPOUT_KEY = 1 << 20


class TextClassifier(nn.Module):
    """The exact-size standalone model of one architecture: token ids [B, L] -> logits [B, C]."""

    arch: Architecture
    vocab_size: int
    max_length: int
    num_classes: int

    @nn.compact
    def __call__(self, tokens, mask, dropout_key=None):
        arch = self.arch
        x = nn.Embed(self.vocab_size, arch.width, name="embed")(tokens)
        x = x + positional_table(self, arch.positional, tokens.shape[1], arch.width)[None]
        x = x * mask[..., None]
        for i, block in enumerate(arch.blocks):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            variant = None if block.op == IDENTITY else arch.variant(block.op)
            x = Block(block, arch.width, variant, arch.dropout, name=f"block{i}")(x, mask, key)
        final_norm = make_norm(arch.final_norm, name="final_norm")
        x = x if final_norm is None else final_norm(x)
        pooled = pool(x, mask, arch.pooling)
        if arch.head_dropout and dropout_key is not None:
            pooled = dropout(pooled, arch.head_dropout, jax.random.fold_in(dropout_key, HEAD_DROPOUT_KEY))
        return Dense(self.num_classes, name="head")(pooled)


def positional_table(module: nn.Module, positional: str, length: int, width: int) -> jax.Array:
    if positional == "learned":
        return module.param("position", nn.initializers.normal(0.02), (module.max_length, width))[:length]
    if positional == "sinusoidal":
        return sinusoidal_positions(length, width)
    return jnp.zeros((length, width), jnp.float32)


@functools.cache
def module_param_shapes(kind: str, width: int, variant=None, num_classes: int = 2) -> Params:
    """Parameter shapes of one exact-size submodule (an op, "layernorm", "rmsnorm" or "head"), found by
    tracing its init without running it."""
    x = jax.ShapeDtypeStruct((1, 4, width), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 4), jnp.bool_)
    if kind == "layernorm":
        return jax.eval_shape(nn.LayerNorm().init, jax.random.key(0), x)["params"]
    if kind == "rmsnorm":
        return jax.eval_shape(nn.RMSNorm().init, jax.random.key(0), x)["params"]
    if kind == "head":
        return jax.eval_shape(Dense(num_classes).init, jax.random.key(0), x)["params"]
    module = make_op(kind, width, variant, ACTIVATION_FNS["relu"])
    return jax.eval_shape(module.init, jax.random.key(0), x, mask)["params"]


def count_params(params: Params) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def part_sizes(arch: Architecture, vocab_size: int, max_length: int, num_classes: int) -> dict[tuple, int]:
    """The parameters of each part of `TextClassifier(arch, ...)`, keyed as `evonas.inherit.parts`: ("embed",),
    ("position",), ("final_norm",), ("head",), ("block", i, "op") and ("block", i, "norm"); summed from the
    submodules' cached shapes, without tracing a whole model per child (a search's 64 children took 1.2 s)."""
    width = arch.width
    sizes = {("embed",): vocab_size * width,
             ("head",): count_params(module_param_shapes("head", width, num_classes=num_classes))}
    if arch.positional == "learned":
        sizes[("position",)] = max_length * width
    if arch.final_norm != "none":
        sizes[("final_norm",)] = count_params(module_param_shapes(arch.final_norm, width))
    for i, block in enumerate(arch.blocks):
        if block.op != IDENTITY:
            sizes[("block", i, "op")] = count_params(module_param_shapes(block.op, width, arch.variant(block.op)))
            if block.norm != "none":
                sizes[("block", i, "norm")] = count_params(module_param_shapes(block.norm, width))
    return sizes


def param_count(arch: Architecture, vocab_size: int, max_length: int, num_classes: int) -> int:
    """The parameters of `TextClassifier(arch, ...)`: what counting its traced init gives (`part_sizes`)."""
    return sum(part_sizes(arch, vocab_size, max_length, num_classes).values())


def forward_flops(arch: Architecture, length: int, num_classes: int) -> int:
    """Matmul FLOPs of one forward pass over one sequence (2 per multiply-add; elementwise work ignored)."""
    flops = 2 * arch.width * num_classes
    for block in arch.blocks:
        if block.op != IDENTITY:
            flops += OP_FAMILIES[family_name(block.op)].flops(block.op, arch.width, arch.variant(block.op), length)
    return flops
