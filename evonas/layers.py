"""Kernels that every model form shares: matmuls, dropout, norms, positions and pooling.

The block ops built from them, and their registry, are in `evonas.ops`.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # a pytree of float32 arrays

ACTIVATION_FNS: dict[str, Callable] = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "swish": jax.nn.swish, "tanh": jnp.tanh}
MASKED_LOGIT = -1e9  # finite, so a fully masked row gives a uniform softmax instead of NaN
NORM_EPSILON = 1e-6  # Flax's LayerNorm and RMSNorm default


# ---- kernels ------------------------------------------------------------------------------


def dropout(x: jax.Array, rate, key: jax.Array | None, width=None) -> jax.Array:
    """Inverted dropout with an explicit key, so both model forms draw the same mask.

    16 random bits decide each element, two per 32-bit word. Threefry draws just two words per call, and
    each element's word is the `lowbias32` hash of its position mixed with them: drawing every word with
    threefry cost 4-5% of a population train call (experiments/README.md). The rate is rounded to 1/65536.
    Given `width` (traced), x holds an array of that last dimension, zero-padded: positions, and so the mask,
    are those of the unpadded array.
    """
    if key is None:
        return x
    offset, salt = jax.random.bits(key, (2,), jnp.uint32)
    width = x.shape[-1] if width is None else width
    position = jnp.zeros(x.shape[:-1], jnp.uint32)
    for axis, size in enumerate(x.shape[:-1]):
        position = position * jnp.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, x.shape[:-1], axis)
    position = position[..., None] * jnp.asarray(width, jnp.uint32) + jax.lax.broadcasted_iota(jnp.uint32, x.shape, x.ndim - 1)
    words = lowbias32(((position >> 1) + offset) ^ salt)
    halves = (words >> ((position & 1) * 16)) & jnp.uint32(0xFFFF)  # element 2i is the low half of word i
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


def dense(params: Params, x: jax.Array) -> jax.Array:
    """`Dense` applied with its parameters (`kernel`, `bias`) given."""
    return add_bias(matmul(x, params["kernel"]), params["bias"])


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y [..., W] + bias [W], broadcast explicitly (as nn.Dense does), so strict rank promotion holds."""
    return y + leading_ones(bias, y.ndim)


def leading_ones(x: jax.Array, ndim: int) -> jax.Array:
    """x with size-1 axes in front up to `ndim` axes: the explicit form of NumPy's rank promotion."""
    return jnp.reshape(x, (1,) * (ndim - x.ndim) + x.shape)


def select(index: jax.Array, candidates: Sequence[Params]) -> Params:
    """The candidate pytree at a traced index, elementwise, so that only that candidate gets a gradient."""
    if len(candidates) == 1:
        return candidates[0]
    return jax.tree.map(lambda *c: jnp.select([index == i for i in range(len(c))], c), *candidates)


def select_activation(names: Sequence[str], index: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The activation among `names` at a traced index, as one elementwise function."""
    fns = [ACTIVATION_FNS[name] for name in names]
    return lambda z: fns[0](z) if len(fns) == 1 else jnp.select([index == i for i in range(len(fns))],
                                                                 [f(z) for f in fns])


def padded_norm(x: jax.Array, kind: jax.Array, params: Params, width) -> jax.Array:
    """Flax's LayerNorm (kind 0), RMSNorm (kind 1) or no norm (kind 2) of x's first `width` features, with x
    zero beyond them, and kept zero. `params` holds each norm's `scale` (and LayerNorm's `bias`), zero-padded."""
    xf = x.astype(jnp.float32)  # Flax's statistics are float32
    feature = (leading_ones(jnp.arange(x.shape[-1]), x.ndim) < width).astype(jnp.float32)
    mean = jnp.sum(xf, -1, keepdims=True) / width
    mean2 = jnp.sum(xf * xf, -1, keepdims=True) / width
    variance = jnp.maximum(0.0, mean2 - mean * mean)
    layer = (xf - mean) * (jax.lax.rsqrt(variance + NORM_EPSILON) * leading_ones(params["layernorm"]["scale"], x.ndim))
    layer = add_bias(layer, params["layernorm"]["bias"]) * feature
    rms = xf * (jax.lax.rsqrt(mean2 + NORM_EPSILON) * leading_ones(params["rmsnorm"]["scale"], x.ndim))
    return jnp.select([kind == 0, kind == 1], [layer, rms], xf).astype(x.dtype)


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    position = np.arange(length)[:, None]
    frequency = np.exp(-np.log(10000.0) * np.arange(0, width, 2) / width)
    table = np.zeros((length, width), np.float32)
    table[:, 0::2] = np.sin(position * frequency)
    table[:, 1::2] = np.cos(position * frequency)
    return jnp.asarray(table)


POOLINGS = ("mean", "max", "first", "last")


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
