"""Matmul FLOPs a traced program executes for one genome, following every conditional to the branch it takes.

XLA's `compiled.cost_analysis()` is no use for evonas's programs: it counts a loop body once,
whatever its trip count, and a conditional as its most expensive branch (checked on JAX 0.10:
a 10-step scan of one matmul reports one matmul's FLOPs, a 3-way switch its largest branch).
So the benchmark walks the jaxpr instead. Genes are the only inputs that steer control flow,
so the walk runs only small computations for real (those that decide a `cond` or `switch`
index); large arrays are replaced by zeros of the right shape, since their values never
choose a branch. Loops multiply their body's FLOPs by their length; recomputation under
`jax.checkpoint` appears in the jaxpr, so it is counted. XLA may still remove dead work,
so this is what the program asks for, an upper bound on what the CPU does.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

SMALL = 4096  # equations whose inputs hold at most this many elements run for real
CALLS = ("jit", "pjit", "closed_call", "checkpoint", "custom_jvp_call", "custom_vjp_call")  # run their one jaxpr as is


def member_step_flops(closed: core.ClosedJaxpr, args: Sequence[Any]) -> float:
    """Matmul FLOPs of `closed` run on `args` (leaves; arrays or ShapeDtypeStructs, replaced by zeros unless given)."""
    values = [placeholder(a) if isinstance(a, jax.ShapeDtypeStruct) else a for a in args]
    return _run(closed.jaxpr, closed.consts, values)[1]


def placeholder(aval) -> Any:
    """Zeros of an abstract value's shape and dtype (PRNG keys included)."""
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(np.zeros((*aval.shape, 2), np.uint32))
    return np.zeros(aval.shape, aval.dtype)


def _subjaxprs(eqn) -> Iterator[tuple[core.Jaxpr, Sequence[Any]]]:
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr, item.consts
            elif isinstance(item, core.Jaxpr):
                yield item, ()


def _dot_flops(eqn) -> float:
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contracting])


def _has_cond(jaxpr: core.Jaxpr) -> bool:
    return any(e.primitive.name == "cond" or any(_has_cond(s) for s, _ in _subjaxprs(e)) for e in jaxpr.eqns)


def _static_flops(jaxpr: core.Jaxpr) -> float:
    """FLOPs of a jaxpr without conditionals."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        if eqn.primitive.name == "while" and any(_static_flops(s) for s, _ in _subjaxprs(eqn)):
            raise ValueError("a while loop with matmuls: its trip count is unknown")
        repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        total += repeats * sum(_static_flops(s) for s, _ in _subjaxprs(eqn))
    return total


def _run(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> tuple[list[Any], float]:
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]

    flops = 0.0
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        subs = list(_subjaxprs(eqn))
        if eqn.primitive.name == "cond":
            branch, branch_consts = subs[int(inputs[0])]
            outputs, eqn_flops = _run(branch, branch_consts, inputs[1:])
        elif eqn.primitive.name == "scan" and _has_cond(subs[0][0]):
            outputs, eqn_flops = _run_scan(eqn, inputs)
        elif len(subs) == 1 and (_has_cond(subs[0][0]) or (
                eqn.primitive.name in CALLS and sum(np.size(x) for x in inputs) <= SMALL)):
            # A call: entered when it branches, or when it is small, since it may compute a branch index
            # (jnp.where is a jitted call).
            outputs, eqn_flops = _run(*subs[0], inputs)
        else:
            repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
            eqn_flops = repeats * sum(_static_flops(s) for s, _ in subs)
            eqn_flops += _dot_flops(eqn) if eqn.primitive.name == "dot_general" else 0.0
            if not subs and sum(np.size(x) for x in inputs) <= SMALL:
                outputs = eqn.primitive.bind(*inputs, **eqn.params)
                outputs = outputs if eqn.primitive.multiple_results else [outputs]
            else:
                outputs = [placeholder(v.aval) for v in eqn.outvars]
        flops += eqn_flops
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars], flops


def _run_scan(eqn, inputs) -> tuple[list[Any], float]:
    """A scan whose body branches, one iteration at a time."""
    (body, body_consts), = _subjaxprs(eqn)
    num_consts, num_carry, length = eqn.params["num_consts"], eqn.params["num_carry"], eqn.params["length"]
    consts, carry, xs = inputs[:num_consts], inputs[num_consts:num_consts + num_carry], inputs[num_consts + num_carry:]
    order = range(length - 1, -1, -1) if eqn.params["reverse"] else range(length)
    flops, ys = 0.0, {}
    for i in order:
        outputs, step_flops = _run(body, body_consts, [*consts, *carry, *(x[i] for x in xs)])
        carry, ys[i], flops = outputs[:num_carry], outputs[num_carry:], flops + step_flops
    stacked = [jnp.stack([ys[i][k] for i in range(length)]) for k in range(len(eqn.outvars) - num_carry)]
    return [*carry, *stacked], flops
