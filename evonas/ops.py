"""The block ops, each twice, and ONE registry of op families.

Each op exists as the exact-size Flax module of a standalone model, and as its population form (`*_rows`),
which computes any op and variant of its family for a member whose choices are traced integers, from the
exact-size parameters of each candidate, so that members with different choices share one tile of a grouped
program (`evonas.grouped`). `OP_FAMILIES` ties the two together with the family's variant gene and its cost:
adding an op is one entry there, and an op missing from it is an error.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import (
    MASKED_LOGIT,
    Dense,
    Params,
    add_bias,
    dense,
    matmul,
    select,
)


@dataclasses.dataclass(frozen=True)
class Rows:
    """What a population form knows of one member (traced) and of its tile (static).

    A tile holds members of one family, all of width `widths[0]` or, for families computed at the largest
    width, of any width in `widths`. `read(op, width, variant)` gives the member's exact-size parameters for
    that choice from its slot buffer.
    """

    read: Callable[[str, int, Any], Params]
    ops: tuple[str, ...]  # the family's ops in the space
    variants: tuple[Any, ...]  # the choices of the family's variant gene, or (None,)
    widths: tuple[int, ...]
    op: jax.Array  # index into `ops`
    variant: jax.Array  # index into `variants`
    width: jax.Array  # index into `widths`


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


def attention_rows(rows: Rows, x, mask, activation):
    """Self-attention with a traced head count. Heads are unions of `subheads` equal slices of the features:
    the logits of each subhead are summed over its head (a block-diagonal mixing), and every subhead then
    reads its head's softmax, which is exactly the attention of that head count."""
    width = rows.widths[0]
    params = rows.read("attention", width, rows.variants[0])
    subheads = math.lcm(*rows.variants)
    batch, length, _ = x.shape
    q, k, v = jnp.split(dense(params["qkv"], x), 3, axis=-1)
    q, k, v = (t.reshape(batch, length, subheads, width // subheads) for t in (q, k, v))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    if len(rows.variants) > 1:
        group = jnp.asarray([subheads // h for h in rows.variants])[rows.variant]
        head = jnp.arange(subheads) // group
        mixing = (head[:, None] == head[None, :]).astype(logits.dtype)
        logits = jnp.einsum("ij,bjqk->biqk", mixing, logits)
    scale = jnp.asarray([np.float32(np.sqrt(width // h)) for h in rows.variants])[rows.variant]
    logits = jnp.where(mask[:, None, None, :], logits / scale.astype(logits.dtype), MASKED_LOGIT)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    return dense(params["out"], out.reshape(batch, length, width))


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
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[2], self.width))
        bias = self.param("bias", nn.initializers.zeros, (self.width,))
        return same_conv(x, kernel, bias)


def same_conv(x, kernel, bias):
    """The "SAME" convolution [B, L, F] -> [B, L, W] of a kernel [K, F, W], as one matmul over K shifts."""
    size, length = kernel.shape[0], x.shape[1]
    half = (size - 1) // 2
    padded = jnp.pad(x, ((0, 0), (half, size - 1 - half), (0, 0)))
    windows = jnp.concatenate([padded[:, j : j + length] for j in range(size)], axis=-1)
    return add_bias(matmul(windows, kernel.reshape(-1, kernel.shape[-1])), bias)


def kernel_size(op: str) -> int:
    return int(op[4:])


def conv_rows(rows: Rows, x, mask, activation):
    """A convolution of any kernel size as one of the largest, its own taps centred and zeros elsewhere."""
    width, largest = rows.widths[0], max(kernel_size(op) for op in rows.ops)
    candidates = []
    for op in rows.ops:
        params = rows.read(op, width, None)["conv"]
        before = (largest - 1) // 2 - (kernel_size(op) - 1) // 2
        taps = ((before, largest - kernel_size(op) - before), (0, 0), (0, 0))
        candidates.append({"kernel": jnp.pad(params["kernel"], taps), "bias": params["bias"]})
    params = select(rows.op, candidates)
    return activation(same_conv(x * mask[..., None], params["kernel"], params["bias"]))


class GatedMLP(nn.Module):
    width: int
    expansion: int
    activation: Callable

    @nn.compact
    def __call__(self, x, mask):
        gate, value = jnp.split(Dense(2 * self.expansion * self.width, name="up")(x), 2, axis=-1)
        return Dense(self.width, name="down")(self.activation(gate) * value)


def gated_mlp_rows(rows: Rows, x, mask, activation):
    """A gated MLP of any expansion as one of the largest, its hidden units beyond its own zero (every
    activation here maps 0 to 0, so they stay zero)."""
    width, largest = rows.widths[0], max(rows.variants)
    candidates = []
    for expansion in rows.variants:
        params = rows.read("gated_mlp", width, expansion)
        spare = (0, (largest - expansion) * width)
        gate, value = jnp.split(params["up"]["kernel"], 2, axis=-1)
        gate_bias, value_bias = jnp.split(params["up"]["bias"], 2)
        candidates.append({
            "up": {"kernel": jnp.concatenate([jnp.pad(gate, ((0, 0), spare)), jnp.pad(value, ((0, 0), spare))], -1),
                   "bias": jnp.concatenate([jnp.pad(gate_bias, spare), jnp.pad(value_bias, spare)])},
            "down": {"kernel": jnp.pad(params["down"]["kernel"], (spare, (0, 0))), "bias": params["down"]["bias"]}})
    params = select(rows.variant, candidates)
    gate, value = jnp.split(dense(params["up"], x), 2, axis=-1)
    return dense(params["down"], activation(gate) * value)


class Recurrent(nn.Module):
    """A GRU or LSTM read left to right; padding steps keep the previous state."""

    width: int
    cell: str  # "gru" or "lstm"

    @nn.compact
    def __call__(self, x, mask):
        gates = GATES[self.cell]
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


GATES = {"gru": 3, "lstm": 4}


def recurrent_rows(rows: Rows, x, mask, activation):
    """A GRU or LSTM of any width computed at the largest one (x is zero beyond the member's width, and may be
    wider than the cells, as a bidirectional member's input is): its weights are laid out with each gate's block
    at a stride of the largest width, zeros elsewhere, so the padding stays zero through both cells, and one time
    scan serves every recurrent member of a tile."""
    wmax, gates = max(rows.widths), max(GATES[op] for op in rows.ops)
    candidates = []
    for op in rows.ops:
        for width in rows.widths:
            params = rows.read(op, width, None)
            candidates.append({"kernel": _gate_blocks(params["input"]["kernel"], GATES[op], gates, wmax, x.shape[-1]),
                               "bias": _gate_blocks(params["input"]["bias"][None], GATES[op], gates, wmax, 1)[0],
                               "recurrent": _gate_blocks(params["recurrent"], GATES[op], gates, wmax, wmax)})
    params = select(rows.op * len(rows.widths) + rows.width, candidates)
    is_lstm = jnp.asarray([op == "lstm" for op in rows.ops])[rows.op]

    def step(state, inputs_t):
        h, c = state
        xt, mt = inputs_t
        x_gates, h_gates = jnp.split(xt, gates, axis=-1), jnp.split(h @ params["recurrent"], gates, axis=-1)
        pre = [a + b for a, b in zip(x_gates, h_gates)]
        new_h, new_c = [], []
        if "gru" in rows.ops:
            r, z = jax.nn.sigmoid(pre[0]), jax.nn.sigmoid(pre[1])
            new_h.append((1.0 - z) * jnp.tanh(x_gates[2] + r * h_gates[2]) + z * h)
            new_c.append(c)
        if "lstm" in rows.ops:
            lstm_c = jax.nn.sigmoid(pre[1] + 1.0) * c + jax.nn.sigmoid(pre[0]) * jnp.tanh(pre[2])
            new_h.append(jax.nn.sigmoid(pre[3]) * jnp.tanh(lstm_c))
            new_c.append(lstm_c)
        keep = mt[:, None]
        h = jnp.where(keep, jnp.where(is_lstm, new_h[-1], new_h[0]), h)
        return (h, jnp.where(keep, jnp.where(is_lstm, new_c[-1], new_c[0]), c)), h

    zeros = jnp.zeros((x.shape[0], wmax), x.dtype)
    inputs = add_bias(matmul(x, params["kernel"]), params["bias"])
    _, hs = jax.lax.scan(step, (zeros, zeros), (inputs.swapaxes(0, 1), mask.swapaxes(0, 1)))
    return hs.swapaxes(0, 1)


class Bidirectional(nn.Module):
    """A GRU or LSTM of half the width read each way, the two states side by side: every position sees the whole
    text, where one read left to right sees only what came before it. The backward cell reads the reversed
    sequence, whose padding then comes first and keeps its zero state."""

    width: int
    cell: str  # "gru" or "lstm"

    @nn.compact
    def __call__(self, x, mask):
        forward = Recurrent(self.width // 2, self.cell, name="forward")(x, mask)
        backward = Recurrent(self.width // 2, self.cell, name="backward")(x[:, ::-1], mask[:, ::-1])
        return jnp.concatenate([forward, backward[:, ::-1]], axis=-1)


def bidirectional_rows(rows: Rows, x, mask, activation):
    """Both directions through `recurrent_rows`, each at half the tile's one width (this family is computed at
    each width in tiles of its own)."""

    def direction(name: str) -> Rows:
        return dataclasses.replace(rows, ops=tuple(op[2:] for op in rows.ops), widths=(rows.widths[0] // 2,),
                                   read=lambda op, width, variant: rows.read(f"bi{op}", 2 * width, variant)[name])

    forward = recurrent_rows(direction("forward"), x, mask, activation)
    backward = recurrent_rows(direction("backward"), x[:, ::-1], mask[:, ::-1], activation)
    return jnp.concatenate([forward, backward[:, ::-1]], axis=-1)


def _gate_blocks(kernel: jax.Array, gates: int, slots: int, wmax: int, rows: int) -> jax.Array:
    """[r, gates * w] (gate blocks side by side) -> [rows, slots * wmax], block g at column g * wmax, zeros in
    the rows below r."""
    blocks = [jnp.pad(b, ((0, rows - b.shape[0]), (0, wmax - b.shape[1]))) for b in jnp.split(kernel, gates, -1)]
    return jnp.concatenate(blocks + [jnp.zeros_like(blocks[0])] * (slots - gates), axis=-1)


# ---- the registry -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpFamily:
    """Ops that share a slot's stored buffer (held at the family's largest op and variant), a cost formula
    and a population form.

    Attributes:
        ops: the op choices of the family.
        variant_gene: the genome-wide gene that sizes its ops (attention's heads, the gated MLP's expansion),
            or None.
        module: (op, width, variant, activation) -> the exact-size Flax module.
        flops: (op, width, variant, length) -> matmul FLOPs of one forward pass over one sequence.
        rows: the population form, (Rows, x, mask, activation) -> output, for any op and variant.
        any_width: whether `rows` computes every width at the largest one (so that one tile, one time scan for
            the recurrent cells, serves them all) rather than each width in tiles of its own.
    """

    ops: tuple[str, ...]
    variant_gene: str | None
    module: Callable[[str, int, Any, Callable], nn.Module]
    flops: Callable[[str, int, Any, int], int]
    rows: Callable
    any_width: bool = False


OP_FAMILIES: dict[str, OpFamily] = {
    "attention": OpFamily(
        ("attention",), "heads", lambda op, w, heads, act: SelfAttention(w, heads, name="op"),
        lambda op, w, heads, length: 8 * length * w * w + 4 * length * length * w, attention_rows),
    "conv": OpFamily(
        ("conv3", "conv5", "conv7"), None, lambda op, w, _, act: Convolution(w, kernel_size(op), act, name="op"),
        lambda op, w, _, length: 2 * length * kernel_size(op) * w * w, conv_rows),
    "gated_mlp": OpFamily(
        ("gated_mlp",), "ffn_expansion", lambda op, w, e, act: GatedMLP(w, e, act, name="op"),
        lambda op, w, e, length: 6 * e * length * w * w, gated_mlp_rows),
    "recurrent": OpFamily(
        ("gru", "lstm"), None, lambda op, w, _, act: Recurrent(w, op, name="op"),
        lambda op, w, _, length: 4 * GATES[op] * length * w * w, recurrent_rows, any_width=True),
    "bidirectional": OpFamily(
        ("bigru", "bilstm"), None, lambda op, w, _, act: Bidirectional(w, op[2:], name="op"),
        lambda op, w, _, length: 2 * GATES[op[2:]] * length * w * w, bidirectional_rows),
}
IDENTITY = "identity"  # the op of a block that passes its input through; it holds no parameters
OPS = (IDENTITY, *(op for family in OP_FAMILIES.values() for op in family.ops))


def family_name(op: str) -> str:
    """The registry's family of an op (not identity); an op it does not hold is an error."""
    for name, family in OP_FAMILIES.items():
        if op in family.ops:
            return name
    raise ValueError(f"op {op!r} is in no op family; known ops are {list(OPS)}")


def make_op(op: str, width: int, variant, activation: Callable) -> nn.Module:
    """The exact-size Flax module of one block op (not identity)."""
    return OP_FAMILIES[family_name(op)].module(op, width, variant, activation)
