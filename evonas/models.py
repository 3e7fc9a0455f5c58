"""The text-classifier family: an exact-size Flax model per genome, and its population form.

`TextClassifier(arch)` is the standalone model a user trains, exports and reuses: its
parameters have exactly the shapes its architecture needs. `PopulationModel` runs the same
Flax modules on parameters stored at the largest size the space allows, with the genome
as traced integers: each gene picks a branch of an unbatched `lax.switch`, and each branch
slices the stored parameters to the exact shapes it needs, so only the chosen architecture
is computed and one compiled program serves every genome.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from evonas.space import SearchSpace

Params = Any  # a pytree of float32 arrays

ACTIVATION_FNS: dict[str, Callable] = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "swish": jax.nn.swish, "tanh": jnp.tanh}
OP_FAMILY = {"attention": "attention", "conv3": "conv", "conv5": "conv", "conv7": "conv",
             "gated_mlp": "gated_mlp", "gru": "gru", "lstm": "lstm"}  # ops sharing a family share stored params
MASKED_LOGIT = -1e9  # finite, so a fully masked row gives a uniform softmax instead of NaN


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

    @classmethod
    def from_genome(cls, space: SearchSpace, genome) -> "Architecture":
        choice = space.decode(genome)
        blocks = tuple(
            BlockConfig(choice[f"block{i}_op"], choice[f"block{i}_activation"], choice[f"block{i}_norm"])
            for i in range(choice["num_blocks"])
        )
        fields = {f.name: choice[f.name] for f in dataclasses.fields(cls) if f.name != "blocks"}
        return cls(blocks=blocks, **fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dropout(x: jax.Array, rate, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with an explicit key, so both model forms draw the same mask.

    16 random bits decide each element, two per 32-bit word. Threefry draws just two words per call, and
    each element's word is the `lowbias32` hash of its position mixed with them: drawing every word with
    threefry cost 4-5% of a population train call (experiments/README.md). The rate is rounded to 1/65536.
    """
    if key is None:
        return x
    offset, salt = jax.random.bits(key, (2,), jnp.uint32)
    words = lowbias32((jax.lax.iota(jnp.uint32, -(-x.size // 2)) + offset) ^ salt)
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[: x.size].reshape(x.shape)
    dropped = jnp.round(jnp.asarray(rate, jnp.float32) * 65536)  # halves below this are dropped
    keep_probability = 1.0 - dropped / 65536
    return jnp.where(halves >= dropped, x / keep_probability.astype(x.dtype), 0.0)


def lowbias32(words: jax.Array) -> jax.Array:
    """Chris Wellons' lowbias32 (hash-prospector): a bijective uint32 hash in which every input bit
    flips each output bit with probability close to 1/2."""
    words = (words ^ (words >> 16)) * jnp.uint32(0x7FEB352D)
    words = (words ^ (words >> 15)) * jnp.uint32(0x846CA68B)
    return words ^ (words >> 16)


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over x's last axis, whose kernel gradient XLA:CPU computes at full speed.

    Differentiated as written, the kernel gradient contracts both operands over their leading
    axis; XLA:CPU then transposes the output gradient and hands the dot to its slow path (26-62
    against 100 GFLOP/s on this CPU). Transposing the input first, behind an optimization
    barrier, makes it the plain matmul that its fast path takes. Other backends keep XLA's choice.
    """
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_forward(x, kernel):
    return matmul(x, kernel), (x, kernel)


def _matmul_backward(residuals, grad):
    x, kernel = residuals
    grad_x = jax.lax.dot_general(grad, kernel, (((grad.ndim - 1,), (1,)), ((), ())))
    rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    grad_kernel = jax.lax.platform_dependent(
        rows, grad_rows, cpu=lambda a, b: jax.lax.optimization_barrier(a.T) @ b, default=lambda a, b: a.T @ b)
    return grad_x, grad_kernel


matmul.defvjp(_matmul_forward, _matmul_backward)


def _dense_dot_general(inputs, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s contraction through `matmul`."""
    return matmul(inputs, kernel)


Dense = functools.partial(nn.Dense, dot_general=_dense_dot_general)


class SelfAttention(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        batch, length, _ = x.shape
        head_dim = self.width // self.heads
        q, k, v = jnp.split(Dense(3 * self.width, name="qkv")(x), 3, axis=-1)
        q, k, v = (t.reshape(batch, length, self.heads, head_dim) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / float(np.sqrt(head_dim))  # a Python float keeps q's dtype
        logits = jnp.where(mask[:, None, None, :], logits, MASKED_LOGIT)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        return Dense(self.width, name="out")(out.reshape(batch, length, self.width))


class Convolution(nn.Module):
    width: int
    kernel_size: int
    activation: Callable

    @nn.compact
    def __call__(self, x, mask):
        return self.activation(SameConv1D(self.width, self.kernel_size, name="conv")(x * mask[..., None]))


class SameConv1D(nn.Module):
    """`nn.Conv(width, (kernel_size,), padding="SAME")` written as one matmul over stacked shifts.

    XLA:CPU runs a convolution inside a loop (the population programs' scans) about 15x slower
    than at top level; a matmul keeps its speed everywhere, and the parameters are nn.Conv's.
    """

    width: int
    kernel_size: int

    @nn.compact
    def __call__(self, x):
        length, features = x.shape[1], x.shape[2]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, features, self.width))
        bias = self.param("bias", nn.initializers.zeros, (self.width,))
        half = (self.kernel_size - 1) // 2
        padded = jnp.pad(x, ((0, 0), (half, self.kernel_size - 1 - half), (0, 0)))
        windows = jnp.concatenate([padded[:, j : j + length] for j in range(self.kernel_size)], axis=-1)
        return matmul(windows, kernel.reshape(self.kernel_size * features, self.width)) + bias


class GatedMLP(nn.Module):
    width: int
    expansion: int
    activation: Callable

    @nn.compact
    def __call__(self, x, mask):
        gate, value = jnp.split(Dense(2 * self.expansion * self.width, name="up")(x), 2, axis=-1)
        return Dense(self.width, name="down")(self.activation(gate) * value)


class Recurrent(nn.Module):
    """A GRU or LSTM read left to right; padding steps keep the previous state."""

    width: int
    cell: str  # "gru" or "lstm"

    @nn.compact
    def __call__(self, x, mask):
        gates = 3 if self.cell == "gru" else 4
        inputs = Dense(gates * self.width, name="input")(x)
        # Not orthogonal: its QR (a LAPACK call) inside the population programs hung XLA:CPU intermittently.
        recurrent = self.param("recurrent", nn.initializers.lecun_normal(), (self.width, gates * self.width))
        batch = x.shape[0]

        def gru_step(h, xt):
            xr, xz, xn = jnp.split(xt, 3, axis=-1)
            hr, hz, hn = jnp.split(h @ recurrent, 3, axis=-1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            return (1.0 - z) * jnp.tanh(xn + r * hn) + z * h

        def lstm_step(carry, xt):
            h, c = jnp.split(carry, 2, axis=-1)
            i, f, g, o = jnp.split(xt + h @ recurrent, 4, axis=-1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return jnp.concatenate([jax.nn.sigmoid(o) * jnp.tanh(c), c], axis=-1)

        step_fn = gru_step if self.cell == "gru" else lstm_step
        state_width = self.width if self.cell == "gru" else 2 * self.width

        def scan_step(state, inputs_t):
            xt, mt = inputs_t
            state = jnp.where(mt[:, None], step_fn(state, xt), state)
            return state, state[:, : self.width]

        init = jnp.zeros((batch, state_width), x.dtype)
        _, hs = jax.lax.scan(scan_step, init, (inputs.swapaxes(0, 1), mask.swapaxes(0, 1)))
        return hs.swapaxes(0, 1)


def make_op(op: str, width: int, heads: int, expansion: int, activation: Callable) -> nn.Module:
    """The exact-size Flax module of one block op (not identity)."""
    if op == "attention":
        return SelfAttention(width, heads, name="op")
    if op.startswith("conv"):
        return Convolution(width, int(op[4:]), activation, name="op")
    if op == "gated_mlp":
        return GatedMLP(width, expansion, activation, name="op")
    return Recurrent(width, op, name="op")


def make_norm(norm: str) -> nn.Module | None:
    if norm == "layernorm":
        return nn.LayerNorm(name="norm")
    if norm == "rmsnorm":
        return nn.RMSNorm(name="norm")
    return None


class Block(nn.Module):
    """Pre-norm residual block: x + dropout(op(norm(x))); identity blocks hold no parameters."""

    config: BlockConfig
    width: int
    heads: int
    expansion: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, mask, dropout_key):
        if self.config.op == "identity":
            return x
        norm = make_norm(self.config.norm)
        h = norm(x) if norm is not None else x
        h = make_op(self.config.op, self.width, self.heads, self.expansion, ACTIVATION_FNS[self.config.activation])(h, mask)
        return (x + dropout(h, self.dropout_rate, dropout_key)) * mask[..., None]


def checkpointed_switch(index: jax.Array, branches: list[Callable], *operands):
    """`lax.switch` whose branches are recomputed in the backward pass. Differentiated from outside, a switch
    keeps every branch's intermediates for its backward, zero-filled where another branch ran; checkpointed,
    it keeps only the operands, which its branches share."""
    return jax.lax.switch(index, [jax.checkpoint(branch) for branch in branches], *operands)


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    position = np.arange(length)[:, None]
    frequency = np.exp(-np.log(10000.0) * np.arange(0, width, 2) / width)
    table = np.zeros((length, width), np.float32)
    table[:, 0::2] = np.sin(position * frequency)
    table[:, 1::2] = np.cos(position * frequency)
    return jnp.asarray(table)


def pool(x: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """[B, L, W] -> [B, W], reading only real (unpadded) tokens."""
    if pooling == "mean":
        counts = jnp.maximum(mask.sum(axis=1, keepdims=True), 1)
        return (x * mask[..., None]).sum(axis=1) / counts
    if pooling == "max":
        return jnp.where(mask[..., None], x, MASKED_LOGIT).max(axis=1)
    if pooling == "first":
        return x[:, 0]
    last = jnp.maximum(mask.sum(axis=1) - 1, 0)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]


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
        x = x + positional_table(self, arch.positional, tokens.shape[1], arch.width)
        x = x * mask[..., None]
        for i, block in enumerate(arch.blocks):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            x = Block(block, arch.width, arch.heads, arch.ffn_expansion, arch.dropout, name=f"block{i}")(x, mask, key)
        x = nn.LayerNorm(name="final_norm")(x)
        return Dense(self.num_classes, name="head")(pool(x, mask, arch.pooling))


def positional_table(module: nn.Module, positional: str, length: int, width: int) -> jax.Array:
    if positional == "learned":
        return module.param("position", nn.initializers.normal(0.02), (module.max_length, width))[:length]
    if positional == "sinusoidal":
        return sinusoidal_positions(length, width)
    return jnp.zeros((length, width), jnp.float32)


def _leading_slice(stored: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return stored[tuple(slice(0, d) for d in shape)]


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    """Flax's fan-in of a variance-scaled initializer: embeddings spread their last axis, kernels all but it."""
    return shape[-1] if name == "embedding" else int(np.prod(shape[:-1]))


def _rescaled_to_exact_fan_in(stored: Params, exact_options: list[Params], option: jax.Array) -> Params:
    """Rescales each fan-in-initialized array, drawn at its stored size, to the fan-in of its exact shape
    under the traced `option` (an index into `exact_options`)."""

    def rescale(path, value, *exact):
        name = path[-1].key
        if name not in ("kernel", "recurrent", "embedding"):  # biases, norm scales: constants
            return value
        factors = [np.sqrt(_fan_in(name, value.shape) / _fan_in(name, e.shape)) for e in exact]
        return value * jnp.asarray(factors, value.dtype)[option]

    return jax.tree_util.tree_map_with_path(rescale, stored, *exact_options)


def take(stored: Params, shapes: Params) -> Params:
    """The leading corner of every stored array, cut to the exact shapes of `shapes`."""
    return jax.tree.map(lambda a, s: _leading_slice(a, s.shape), stored, shapes)


@functools.cache
def module_param_shapes(kind: str, width: int, heads: int = 1, expansion: int = 1, num_classes: int = 2) -> Params:
    """Parameter shapes of one exact-size submodule, found by tracing its init without running it."""
    x = jax.ShapeDtypeStruct((1, 4, width), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 4), jnp.bool_)
    if kind == "layernorm":
        return jax.eval_shape(nn.LayerNorm().init, jax.random.key(0), x)["params"]
    if kind == "rmsnorm":
        return jax.eval_shape(nn.RMSNorm().init, jax.random.key(0), x)["params"]
    if kind == "head":
        return jax.eval_shape(Dense(num_classes).init, jax.random.key(0), x)["params"]
    module = make_op(kind, width, heads, expansion, ACTIVATION_FNS["relu"])
    return jax.eval_shape(module.init, jax.random.key(0), x, mask)["params"]


def count_params(params: Params) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def forward_flops(arch: Architecture, length: int, num_classes: int) -> int:
    """Matmul FLOPs of one forward pass over one sequence (2 per multiply-add; elementwise work ignored)."""
    w, flops = arch.width, 2 * arch.width * num_classes
    for block in arch.blocks:
        if block.op == "attention":
            flops += 8 * length * w * w + 4 * length * length * w
        elif block.op.startswith("conv"):
            flops += 2 * length * int(block.op[4:]) * w * w
        elif block.op == "gated_mlp":
            flops += 6 * arch.ffn_expansion * length * w * w
        elif block.op in ("gru", "lstm"):
            flops += (12 if block.op == "gru" else 16) * length * w * w
    return flops


class PopulationModel:
    """Every architecture of a space behind one set of traced genes.

    Parameters are stored at the largest size the space allows: one slot per possible
    block, each holding one flat buffer that every op family reads its parameters from
    (a member's genome never changes, so its slot only ever holds the family it uses). A
    genome selects, through unbatched `lax.switch`, which stored parameters
    are used and at what exact size, so a member computes exactly what its standalone
    `TextClassifier` does.
    """

    def __init__(self, space: SearchSpace, vocab_size: int, max_length: int, num_classes: int):
        self.space, self.vocab_size, self.max_length, self.num_classes = space, vocab_size, max_length, num_classes
        self.num_slots = sum(name.endswith("_op") for name in space.names)
        self.choices = {gene.name: gene.choices for gene in space.genes}
        for part in ("op", "activation", "norm"):  # one switch table serves every slot
            if len({self.choices[f"block{i}_{part}"] for i in range(self.num_slots)}) > 1:
                raise ValueError(f"every block must offer the same {part} choices; block{{i}}_{part} genes differ")
        ops = {op for i in range(self.num_slots) for op in self.choices[f"block{i}_op"]}
        self.families = sorted({OP_FAMILY[op] for op in ops if op != "identity"})
        self.conv_kernels = sorted(int(op[4:]) for op in ops if op.startswith("conv"))
        self.norms = sorted({n for i in range(self.num_slots) for n in self.choices[f"block{i}_norm"]} - {"none"})
        self.max_width = max(self.choices["width"])
        self.op_buffer_size = max((count_params(self._family_shapes(f)) for f in self.families), default=0)
        self.stored_shapes = jax.eval_shape(self.init, jax.random.key(0), jnp.zeros(space.num_genes, jnp.int32))

    def _index(self, genome, name):
        return genome[self.space.index(name)]

    def value(self, genome, name):
        """The traced value a genome chooses for gene `name`."""
        return jnp.asarray(self.choices[name])[self._index(genome, name)]

    def _op_shapes(self, family: str, width: int, variant: int) -> Params:
        """Shapes of a family's params; `variant` is the conv kernel or the FFN expansion where it matters."""
        if family == "conv":
            return module_param_shapes(f"conv{variant}", width)
        if family == "gated_mlp":
            return module_param_shapes(family, width, expansion=variant)
        return module_param_shapes(family, width)

    def _max_variant(self, family: str) -> int:
        if family == "conv":
            return max(self.conv_kernels)
        return max(self.choices["ffn_expansion"]) if family == "gated_mlp" else 1

    def _family_shapes(self, family: str) -> Params:
        """A family's parameter shapes at the largest width and variant: what a slot's buffer holds."""
        return self._op_shapes(family, self.max_width, self._max_variant(family))

    def pack(self, params: Params) -> jax.Array:
        """A family's largest-size parameters as one slot buffer [op_buffer_size]."""
        flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(params)])
        return jnp.pad(flat, (0, self.op_buffer_size - flat.size))

    def unpack(self, family: str, buffer: jax.Array) -> Params:
        """The family's largest-size parameters read from a slot buffer (`pack`'s inverse)."""
        shapes, treedef = jax.tree.flatten(self._family_shapes(family))
        offsets = np.cumsum([0] + [s.size for s in shapes])
        leaves = [buffer[start:start + s.size].reshape(s.shape) for start, s in zip(offsets, shapes)]
        return jax.tree.unflatten(treedef, leaves)

    # ---- initialisation -------------------------------------------------------------

    def init(self, key: jax.Array, genome: jax.Array) -> Params:
        """Stored parameters whose used corner is distributed as the standalone model's init.

        Every array is drawn once at its stored size by the standalone model's own Flax initializers,
        and each fan-in-scaled one (kernels, embeddings) is rescaled to the fan-in of the genome's exact
        shape. Entries are i.i.d., so the corner a genome uses is an exact-size draw, and the program
        needs no switch over widths and variants, which made it slow to compile.
        """
        wmax, width_index = self.max_width, self._index(genome, "width")
        key_embed, key_position, key_blocks, key_head = jax.random.split(key, 4)
        # lazy_init: shapes in, parameters out, without running the modules' forward pass.
        x, tokens = jax.ShapeDtypeStruct((1, 4, wmax), jnp.float32), jax.ShapeDtypeStruct((1, 4), jnp.int32)
        stored = {
            "embed": nn.Embed(self.vocab_size, wmax).lazy_init(key_embed, tokens)["params"],
            "final_norm": nn.LayerNorm().lazy_init(key, x)["params"],
            "head": Dense(self.num_classes).lazy_init(key_head, x)["params"],
        }
        exact = [{"embed": {"embedding": jax.ShapeDtypeStruct((self.vocab_size, w), jnp.float32)},
                  "final_norm": module_param_shapes("layernorm", w),
                  "head": module_param_shapes("head", w, num_classes=self.num_classes)} for w in self.choices["width"]]
        stored = _rescaled_to_exact_fan_in(stored, exact, width_index)
        if "learned" in self.choices["positional"]:
            stored["position"] = nn.initializers.normal(0.02)(key_position, (self.max_length, wmax))
        slot_ops = jnp.stack([self._index(genome, f"block{i}_op") for i in range(self.num_slots)])
        init_slot = functools.partial(self._init_slot, genome, width_index)
        stored["blocks"] = jax.vmap(init_slot)(jax.random.split(key_blocks, self.num_slots), slot_ops)
        return stored

    def _init_slot(self, genome, width_index, key, op_index):
        x, wmax = jax.ShapeDtypeStruct((1, 4, self.max_width), jnp.float32), self.max_width
        mask = jax.ShapeDtypeStruct((1, 4), jnp.bool_)
        norms = {"layernorm": nn.LayerNorm().lazy_init(key, x)["params"],
                 "rmsnorm": nn.RMSNorm().lazy_init(key, x)["params"]}
        buffers = []
        for family, family_key in zip(self.families, jax.random.split(key, len(self.families))):
            largest = self._max_variant(family)
            op = f"conv{largest}" if family == "conv" else family
            params = make_op(op, wmax, 1, largest, ACTIVATION_FNS["relu"]).lazy_init(family_key, x, mask)["params"]
            variants = self._family_variants(family)
            exact = [self._op_shapes(family, w, v) for w in self.choices["width"] for v in variants]
            option = width_index * len(variants) + self._variant_index(family, genome, op_index)
            buffers.append(self.pack(_rescaled_to_exact_fan_in(params, exact, option)))
        slot_ops = self.choices["block0_op"]
        family_index = [self.families.index(OP_FAMILY[op]) if op != "identity" else 0 for op in slot_ops]
        buffers = jnp.stack(buffers) if buffers else jnp.zeros((1, 0))  # a space of identity blocks only
        return {"norm": {n: norms[n] for n in self.norms}, "op": buffers[jnp.asarray(family_index)[op_index]]}

    def _family_variants(self, family):
        if family == "conv":
            return self.conv_kernels
        return list(self.choices["ffn_expansion"]) if family == "gated_mlp" else [1]

    def _variant_index(self, family, genome, op_index):
        """Which variant of a family a slot's op uses: its conv kernel or the FFN expansion."""
        if family == "gated_mlp":
            return self._index(genome, "ffn_expansion")
        if family == "conv":
            slot_ops = self.choices["block0_op"]
            table = [self.conv_kernels.index(int(op[4:])) if op.startswith("conv") else len(self.conv_kernels) - 1 for op in slot_ops]
            return jnp.asarray(table)[op_index]
        return 0

    # ---- forward pass ---------------------------------------------------------------

    def apply(self, stored: Params, genome: jax.Array, tokens, mask, dropout_key=None) -> jax.Array:
        """Logits [B, C] of the member with this genome, equal to its standalone model's."""
        return self.at_width(genome, functools.partial(self.apply_at_width, stored=stored, genome=genome,
                                                       tokens=tokens, mask=mask, dropout_key=dropout_key))

    def at_width(self, genome: jax.Array, fn: Callable[[int], Any]):
        """`fn(width)` at the genome's width, the one switch over widths. Differentiate inside `fn`: a
        switch differentiated from outside keeps every width's residuals, zero-filled, for its backward."""
        branches = [functools.partial(fn, width) for width in self.choices["width"]]
        return jax.lax.switch(self._index(genome, "width"), branches)

    def apply_at_width(self, width: int, stored, genome, tokens, mask, dropout_key=None) -> jax.Array:
        """`apply` for a genome whose width is `width`."""
        length = tokens.shape[1]
        x = jnp.take(stored["embed"]["embedding"][:, :width], tokens, axis=0)
        position_tables = {
            "learned": lambda: stored["position"][:length, :width],
            "sinusoidal": lambda: sinusoidal_positions(length, width),
            "none": lambda: jnp.zeros((length, width), jnp.float32),
        }
        positions = [lambda p=p: position_tables[p]().astype(x.dtype) for p in self.choices["positional"]]
        x = x + jax.lax.switch(self._index(genome, "positional"), positions)
        x = x * mask[..., None]
        num_blocks = self.value(genome, "num_blocks")
        per_slot = {part: jnp.stack([self._index(genome, f"block{i}_{part}") for i in range(self.num_slots)])
                    for part in ("op", "activation", "norm")}

        def run_slot(x, slot):
            slot_params, op, activation, norm, index = slot
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
            skip = len(self.choices["block0_op"])  # the op switch's last branch: slots past the last block
            op_or_skip = jnp.where(index < num_blocks, op, skip)
            return self._block(width, genome, slot_params, op_or_skip, activation, norm, key, x, mask), None

        slots = (stored["blocks"], per_slot["op"], per_slot["activation"], per_slot["norm"], jnp.arange(self.num_slots))
        x, _ = jax.lax.scan(run_slot, x, slots)
        x = nn.LayerNorm().apply({"params": take(stored["final_norm"], module_param_shapes("layernorm", width))}, x)
        poolings = [functools.partial(pool, pooling=p) for p in self.choices["pooling"]]
        pooled = checkpointed_switch(self._index(genome, "pooling"), poolings, x, mask)
        head = take(stored["head"], module_param_shapes("head", width, num_classes=self.num_classes))
        return Dense(self.num_classes).apply({"params": head}, pooled)

    def _block(self, width, genome, slot_params, op_or_skip, activation, norm, key, x, mask):
        activations = [ACTIVATION_FNS[a] for a in self.choices["block0_activation"]]

        def activation_fn(z):
            return checkpointed_switch(activation, activations, z)

        def apply_norm(name, h, params):
            if name == "none":
                return h
            module = nn.LayerNorm() if name == "layernorm" else nn.RMSNorm()
            return module.apply({"params": take(params[name], module_param_shapes(name, width))}, h)

        # Computed once outside the op switch: 3 norm branches instead of 3 per op.
        norms = [functools.partial(apply_norm, n) for n in self.choices["block0_norm"]]
        normalized = checkpointed_switch(norm, norms, x, slot_params["norm"])

        def run_op(op_name):
            if op_name == "identity":
                return x

            def op_output(heads, expansion, buffer, h):
                module = make_op(op_name, width, heads, expansion, activation_fn)
                shapes = module_param_shapes(op_name, width, heads, expansion)
                return module.apply({"params": take(self.unpack(OP_FAMILY[op_name], buffer), shapes)}, h, mask)

            # The dropout mask is drawn outside the recomputed op: drawing it costs about as much as a small op.
            variant, options = self._variants(op_name, genome)
            h = checkpointed_switch(variant, [functools.partial(op_output, *o) for o in options],
                                    slot_params["op"], normalized)
            return (x + dropout(h, self.value(genome, "dropout"), key)) * mask[..., None]

        # One switch, not a block cond around an op switch: each level of control flow copies its outputs.
        ops = [functools.partial(run_op, o) for o in self.choices["block0_op"]]
        return jax.lax.switch(op_or_skip, [*ops, lambda: x])

    def _variants(self, op_name, genome) -> tuple[jax.Array, list[tuple[int, int]]]:
        """The genome's variant of an op and every (heads, expansion) it may take: the heads of attention,
        the FFN expansion of the gated MLP, a single variant for the others."""
        if op_name == "attention":
            return self._index(genome, "heads"), [(heads, 1) for heads in self.choices["heads"]]
        if op_name == "gated_mlp":
            return self._index(genome, "ffn_expansion"), [(1, e) for e in self.choices["ffn_expansion"]]
        return jnp.int32(0), [(1, 1)]

    # ---- exact-size view ------------------------------------------------------------

    def standalone(self, arch: Architecture) -> TextClassifier:
        return TextClassifier(arch, self.vocab_size, self.max_length, self.num_classes)

    def standalone_shapes(self, arch: Architecture) -> Params:
        tokens = jax.ShapeDtypeStruct((1, self.max_length), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, self.max_length), jnp.bool_)
        return jax.eval_shape(self.standalone(arch).init, jax.random.key(0), tokens, mask)["params"]

    def _stored_tree(self, arch: Architecture, stored: Params, path: tuple[str, ...]) -> tuple[Params, tuple[str, ...]]:
        """The stored (sub)tree holding a standalone parameter, and the parameter's path inside it."""
        if not path[0].startswith("block"):
            return stored, path
        slot = int(path[0][len("block"):])
        block = arch.blocks[slot]
        if path[1] == "norm":
            return jax.tree.map(lambda a: a[slot], stored["blocks"]["norm"][block.norm]), path[2:]
        return self.unpack(OP_FAMILY[block.op], stored["blocks"]["op"][slot]), path[2:]

    def extract(self, arch: Architecture, stored: Params) -> Params:
        """The exact-size standalone parameters (or gradients) held in a member's stored tree."""
        shapes = self.standalone_shapes(arch)

        def cut(path, shape):
            tree, inner_path = self._stored_tree(arch, stored, tuple(k.key for k in path))
            leaf = functools.reduce(lambda subtree, name: subtree[name], inner_path, tree)
            return _leading_slice(leaf, shape.shape)

        return jax.tree_util.tree_map_with_path(cut, shapes)
