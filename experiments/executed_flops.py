"""Matmul FLOPs (and primitive ops) a traced program executes, following every conditional to the branch it takes.

XLA's `compiled.cost_analysis()` is no use for evonas's programs: it counts a loop body once,
whatever its trip count, and a conditional as its most expensive branch (checked on JAX 0.10:
a 10-step scan of one matmul reports one matmul's FLOPs, a 3-way switch its largest branch).
So the benchmark walks the jaxpr instead. Genes are the only inputs that steer control flow,
so the walk runs for real only the small computations that a `cond` or `switch` index (or a
while loop's condition) depends on, found by slicing the jaxpr backwards from them; every other
value is zeros of the right shape, since it never chooses a branch. Loops multiply their body's
FLOPs by their length; recomputation under `jax.checkpoint` appears in the jaxpr, so it is counted. XLA may still remove dead work,
so this is what the program asks for, an upper bound on what the CPU does. The same walk counts the
primitive operations executed (every equation that is not control flow or a call, loops multiplied out):
before XLA fuses them, a proxy of how many kernels a device launches.
"""

import dataclasses
import functools
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
    return _run(closed.jaxpr, closed.consts, values, frozenset())[1]


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


@functools.cache
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


def _small(variables) -> bool:
    return sum(np.prod(v.aval.shape) for v in variables) <= SMALL


def _entered(eqn, subs) -> bool:
    """Whether the walk runs a call's one jaxpr equation by equation: when it branches, or when it is small,
    since it may compute a branch index (jnp.where is a jitted call)."""
    return len(subs) == 1 and (_has_cond(subs[0][0]) or (eqn.primitive.name in CALLS and _small(eqn.invars)))


def _carried(body: core.Jaxpr, outputs: frozenset[int], num_consts: int,
             num_carry: int) -> tuple[frozenset[int], frozenset[int]]:
    """A loop body's outputs that each iteration needs: `outputs`, and every carry the body needs for them, from
    the iteration before (its inputs are `num_consts` constants, then the `num_carry` carries); and the body's
    inputs they need."""
    while True:
        inputs = _needed(body, outputs)[1]
        more = outputs | {i - num_consts for i in inputs if num_consts <= i < num_consts + num_carry}
        if more == outputs:
            return outputs, inputs
        outputs = more


def _scan_needs(eqn, wanted: frozenset[int]) -> tuple[frozenset[int], frozenset[int]]:
    """For a scan whose body branches: the body outputs each iteration needs and the scan's inputs they need."""
    (body, _), = _subjaxprs(eqn)
    return _carried(body, wanted, eqn.params["num_consts"], eqn.params["num_carry"])


def _while_needs(eqn, wanted: frozenset[int]) -> tuple[frozenset[int], list[int]]:
    """For a while loop: the carries each iteration needs (those its condition reads, those wanted, and those
    the body needs for them) and the loop's inputs they need."""
    cond, body = eqn.params["cond_jaxpr"].jaxpr, eqn.params["body_jaxpr"].jaxpr
    cond_nconsts, body_nconsts = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
    cond_inputs = _needed(cond, frozenset({0}))[1]
    read = wanted | {i - cond_nconsts for i in cond_inputs if i >= cond_nconsts}
    carry, body_inputs = _carried(body, read, body_nconsts, len(body.outvars))
    inputs = [*(i for i in cond_inputs if i < cond_nconsts), *(cond_nconsts + i for i in body_inputs if i < body_nconsts),
              *(cond_nconsts + body_nconsts + i for i in carry)]
    return carry, inputs


@functools.cache
def _needed(jaxpr: core.Jaxpr, outputs: frozenset[int]) -> tuple[frozenset, frozenset[int]]:
    """The variables of `jaxpr` whose values the walk needs, given the `outputs` (indices) it needs and its control
    flow; and the indices of its inputs among them. Mirrors `_run`'s cases."""
    needed = {v for i, v in enumerate(jaxpr.outvars) if i in outputs and not isinstance(v, core.Literal)}
    for eqn in reversed(jaxpr.eqns):
        subs, name = list(_subjaxprs(eqn)), eqn.primitive.name
        wanted = frozenset(i for i, v in enumerate(eqn.outvars) if v in needed)
        if name == "cond":
            operands = frozenset().union(*(_needed(sub, wanted)[1] for sub, _ in subs))
            uses = [eqn.invars[0], *(eqn.invars[1 + i] for i in operands)]
        elif name == "scan" and _has_cond(subs[0][0]):
            uses = [eqn.invars[i] for i in _scan_needs(eqn, wanted)[1]]
        elif name == "while":
            uses = [eqn.invars[i] for i in _while_needs(eqn, wanted)[1]]
        elif _entered(eqn, subs):
            uses = [eqn.invars[i] for i in _needed(subs[0][0], wanted)[1]]
        else:
            uses = eqn.invars if wanted else []
        needed.update(v for v in uses if not isinstance(v, core.Literal))
    return frozenset(needed), frozenset(i for i, v in enumerate(jaxpr.invars) if v in needed)


def _run(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any],
         outputs: frozenset[int]) -> tuple[list[Any], Cost]:
    """The `outputs` (indices; the others are zeros) of `jaxpr` run on `args`, and its cost."""
    needed = _needed(jaxpr, outputs)[0]
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]

    cost = Cost()
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        subs = list(_subjaxprs(eqn))
        wanted = frozenset(i for i, v in enumerate(eqn.outvars) if v in needed)
        if eqn.primitive.name == "cond":
            branch, branch_consts = subs[int(inputs[0])]
            outputs, eqn_cost = _run(branch, branch_consts, inputs[1:], wanted)
        elif eqn.primitive.name == "scan" and _has_cond(subs[0][0]):
            outputs, eqn_cost = _run_scan(eqn, inputs, wanted)
        elif eqn.primitive.name == "while":
            outputs, eqn_cost = _run_while(eqn, inputs, wanted)
        elif _entered(eqn, subs):
            outputs, eqn_cost = _run(*subs[0], inputs, wanted)
        else:
            repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
            eqn_cost = _own_cost(eqn)
            for sub, _ in subs:
                eqn_cost = eqn_cost + _static_cost(sub) * repeats
            if wanted and not subs and _small(eqn.invars):
                outputs = eqn.primitive.bind(*inputs, **eqn.params)
                outputs = outputs if eqn.primitive.multiple_results else [outputs]
            else:
                outputs = [placeholder(v.aval) for v in eqn.outvars]
        cost = cost + eqn_cost
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars], cost


def _run_scan(eqn, inputs, wanted: frozenset[int]) -> tuple[list[Any], Cost]:
    """A scan whose body branches, one iteration at a time."""
    (body, body_consts), = _subjaxprs(eqn)
    num_consts, num_carry, length = eqn.params["num_consts"], eqn.params["num_carry"], eqn.params["length"]
    consts, carry, xs = inputs[:num_consts], inputs[num_consts:num_consts + num_carry], inputs[num_consts + num_carry:]
    order = range(length - 1, -1, -1) if eqn.params["reverse"] else range(length)
    outputs, cost, ys = _scan_needs(eqn, wanted)[0], Cost(), {}
    for i in order:
        step, step_cost = _run(body, body_consts, [*consts, *carry, *(x[i] for x in xs)], outputs)
        carry, ys[i], cost = step[:num_carry], step[num_carry:], cost + step_cost
    stacked = [jnp.stack([ys[i][k] for i in range(length)]) for k in range(len(eqn.outvars) - num_carry)]
    return [*carry, *stacked], cost


def _run_while(eqn, inputs, wanted: frozenset[int]) -> tuple[list[Any], Cost]:
    """A while loop whose body branches, one iteration at a time (its condition must run for real: a
    counter against a bound, as `fori_loop` writes it)."""
    cond, body = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
    cond_consts = inputs[:eqn.params["cond_nconsts"]]
    body_consts = inputs[eqn.params["cond_nconsts"]:eqn.params["cond_nconsts"] + eqn.params["body_nconsts"]]
    carry = inputs[eqn.params["cond_nconsts"] + eqn.params["body_nconsts"]:]
    cost, needed = Cost(), _while_needs(eqn, wanted)[0]
    while True:
        (go,), cond_cost = _run(cond.jaxpr, cond.consts, [*cond_consts, *carry], frozenset({0}))
        cost = cost + cond_cost
        if not bool(go):
            return carry, cost
        carry, step_cost = _run(body.jaxpr, body.consts, [*body_consts, *carry], needed)
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
