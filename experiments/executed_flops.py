"""Matmul FLOPs (and primitive ops) a traced program executes, following every conditional to the branch it takes.

XLA's `compiled.cost_analysis()` is no use for evonas's programs: it counts a loop body once,
whatever its trip count, and a conditional as its most expensive branch (checked on JAX 0.10:
a 10-step scan of one matmul reports one matmul's FLOPs, a 3-way switch its largest branch).
So the benchmark walks the jaxpr instead. Genes are the only inputs that steer control flow,
so the walk runs only small computations for real (those that decide a `cond` or `switch`
index); large arrays are replaced by zeros of the right shape, since their values never
choose a branch. Loops multiply their body's FLOPs by their length; recomputation under
`jax.checkpoint` appears in the jaxpr, so it is counted. XLA may still remove dead work,
so this is what the program asks for, an upper bound on what the CPU does. The same walk counts the
primitive operations executed (every equation that is not control flow or a call, loops multiplied out):
before XLA fuses them, a proxy of how many kernels a device launches.
"""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

SMALL = 4096  # equations whose inputs hold at most this many elements run for real
CALLS = ("jit", "pjit", "closed_call", "checkpoint", "custom_jvp_call", "custom_vjp_call")  # run their one jaxpr as is


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a program executes: matmul FLOPs and primitive operations."""

    flops: float = 0.0
    ops: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.ops + other.ops)

    def __mul__(self, times: float) -> "Cost":
        return Cost(self.flops * times, self.ops * times)


def member_step_flops(closed: core.ClosedJaxpr, args: Sequence[Any]) -> float:
    """Matmul FLOPs of `closed` run on `args` (leaves; arrays or ShapeDtypeStructs, replaced by zeros unless given)."""
    return program_cost(closed, args).flops


def program_cost(closed: core.ClosedJaxpr, args: Sequence[Any]) -> Cost:
    """Matmul FLOPs and primitive operations of `closed` run on `args` (as `member_step_flops`)."""
    values = [placeholder(a) if isinstance(a, jax.ShapeDtypeStruct) else a for a in args]
    return _run(closed.jaxpr, closed.consts, values)[1]


def placeholder(aval) -> Any:
    """Zeros of an abstract value's shape and dtype (PRNG keys included); read-only views of one zero, so that
    the walk allocates nothing for the large arrays it never computes."""
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(np.zeros((*aval.shape, 2), np.uint32))
    return np.broadcast_to(np.zeros((), aval.dtype), aval.shape)


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
    """Whether the jaxpr branches or loops on its values: a conditional, or a while loop (whose trip count
    the walk finds by running it)."""
    return any(e.primitive.name in ("cond", "while") or any(_has_cond(s) for s, _ in _subjaxprs(e))
               for e in jaxpr.eqns)


def _own_cost(eqn) -> Cost:
    """The equation's own cost, not its sub-jaxprs'."""
    if list(_subjaxprs(eqn)):
        return Cost()
    return Cost(_dot_flops(eqn) if eqn.primitive.name == "dot_general" else 0.0, 1.0)


def _static_cost(jaxpr: core.Jaxpr) -> Cost:
    """Cost of a jaxpr without conditionals."""
    total = Cost()
    for eqn in jaxpr.eqns:
        subs = list(_subjaxprs(eqn))
        if eqn.primitive.name == "while" and any(_static_cost(s).flops for s, _ in subs):
            raise ValueError("a while loop with matmuls: its trip count is unknown")
        repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        total = total + _own_cost(eqn)
        for sub, _ in subs:
            total = total + _static_cost(sub) * repeats
    return total


def _run(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> tuple[list[Any], Cost]:
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]

    cost = Cost()
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        subs = list(_subjaxprs(eqn))
        if eqn.primitive.name == "cond":
            branch, branch_consts = subs[int(inputs[0])]
            outputs, eqn_cost = _run(branch, branch_consts, inputs[1:])
        elif eqn.primitive.name == "scan" and _has_cond(subs[0][0]):
            outputs, eqn_cost = _run_scan(eqn, inputs)
        elif eqn.primitive.name == "while":
            outputs, eqn_cost = _run_while(eqn, inputs)
        elif len(subs) == 1 and (_has_cond(subs[0][0]) or (
                eqn.primitive.name in CALLS and sum(np.size(x) for x in inputs) <= SMALL)):
            # A call: entered when it branches, or when it is small, since it may compute a branch index
            # (jnp.where is a jitted call).
            outputs, eqn_cost = _run(*subs[0], inputs)
        else:
            repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
            eqn_cost = _own_cost(eqn)
            for sub, _ in subs:
                eqn_cost = eqn_cost + _static_cost(sub) * repeats
            if not subs and sum(np.size(x) for x in inputs) <= SMALL:
                outputs = eqn.primitive.bind(*inputs, **eqn.params)
                outputs = outputs if eqn.primitive.multiple_results else [outputs]
            else:
                outputs = [placeholder(v.aval) for v in eqn.outvars]
        cost = cost + eqn_cost
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars], cost


def _run_scan(eqn, inputs) -> tuple[list[Any], Cost]:
    """A scan whose body branches, one iteration at a time."""
    (body, body_consts), = _subjaxprs(eqn)
    num_consts, num_carry, length = eqn.params["num_consts"], eqn.params["num_carry"], eqn.params["length"]
    consts, carry, xs = inputs[:num_consts], inputs[num_consts:num_consts + num_carry], inputs[num_consts + num_carry:]
    order = range(length - 1, -1, -1) if eqn.params["reverse"] else range(length)
    cost, ys = Cost(), {}
    for i in order:
        outputs, step_cost = _run(body, body_consts, [*consts, *carry, *(x[i] for x in xs)])
        carry, ys[i], cost = outputs[:num_carry], outputs[num_carry:], cost + step_cost
    stacked = [jnp.stack([ys[i][k] for i in range(length)]) for k in range(len(eqn.outvars) - num_carry)]
    return [*carry, *stacked], cost


def _run_while(eqn, inputs) -> tuple[list[Any], Cost]:
    """A while loop whose body branches, one iteration at a time (its condition must run for real: a
    counter against a bound, as `fori_loop` writes it)."""
    cond, body = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
    cond_consts = inputs[:eqn.params["cond_nconsts"]]
    body_consts = inputs[eqn.params["cond_nconsts"]:eqn.params["cond_nconsts"] + eqn.params["body_nconsts"]]
    carry = inputs[eqn.params["cond_nconsts"] + eqn.params["body_nconsts"]:]
    cost = Cost()
    while True:
        (go,), cond_cost = _run(cond.jaxpr, cond.consts, [*cond_consts, *carry])
        cost = cost + cond_cost
        if not bool(go):
            return carry, cost
        carry, step_cost = _run(body.jaxpr, body.consts, [*body_consts, *carry])
        cost = cost + step_cost


def population_step_cost(population, genomes: np.ndarray, batch_size: int, length: int) -> Cost:
    """What one train step's loss and gradients execute for `genomes`, all on one device, in the population's
    form (routed as `fit` routes a device's members)."""
    steps, num = population.steps, len(genomes)
    stored = jax.tree.map(lambda s: jax.ShapeDtypeStruct((num, *s.shape), s.dtype), population.model.stored_shapes)
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    routes = steps.grouped(num).schedule(genomes) if population.grouped else None
    key = jax.random.key(0)
    closed = jax.make_jaxpr(steps.loss_and_grads)(stored, genomes, tokens, labels, key, routes)
    return program_cost(closed, [*jax.tree.leaves(stored), np.asarray(genomes), tokens, labels, key,
                                 *jax.tree.leaves(routes)])
