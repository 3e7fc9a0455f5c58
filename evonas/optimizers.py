"""The optimizers a genome picks (optax's, with its learning rate, weight decay and clipping), the learning-rate
schedule, and the one optimizer-state layout that every choice shares in a member's state."""

import collections

import jax
import jax.numpy as jnp
import optax

from evonas.layers import Params


def lr_schedule(steps: int, warmup_fraction: float) -> optax.Schedule:
    """A multiplier of the learning rate per step count (optax's, counted in the optimizer state): 0 at step 0,
    rising linearly to 1 at `round(warmup_fraction * steps)`, then a cosine decay to 0 at `steps`."""
    warmup = round(warmup_fraction * steps)
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, steps, end_value=0.0)


def make_optimizer(name: str, learning_rate, weight_decay, clip_norm: float,
                   schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
    """The optax optimizer of a genome's training genes; hyperparameters may be traced. With a `schedule`, the
    rate at step count t is `learning_rate * schedule(t)`; the count lives in the optimizer's state, so one
    compiled program serves every member and every step."""
    if schedule is not None:
        peak = learning_rate
        learning_rate = lambda count: peak * schedule(count)
    clip = optax.clip_by_global_norm(clip_norm)
    if name == "adamw":
        return optax.chain(clip, optax.adamw(learning_rate, weight_decay=weight_decay))
    if name == "lion":
        # Lion's sign updates are ~10x larger than Adam's at the same rate (Chen et al. 2023).
        lion_rate = (lambda count: learning_rate(count) / 10.0) if callable(learning_rate) else learning_rate / 10.0
        return optax.chain(clip, optax.lion(lion_rate, weight_decay=weight_decay * 10.0))
    if name == "sgd":
        return optax.chain(clip, optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=0.9))
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, lion or sgd")


class SharedOptimizerState:
    """One state layout for every optimizer a genome may pick.

    A member only ever advances its own optimizer, so the choices share storage: each optimizer's state
    leaves go to storage leaves of the same shape and dtype (Adam's moments to two parameter-shaped trees,
    Lion's and SGD's momentum to the first). A member then holds one state, not one per choice, and the
    optimizer switch copies no other choice's state every step.
    """

    def __init__(self, optimizers: list[optax.GradientTransformation], params: Params):
        storage = {}  # (shape, dtype, rank among an optimizer's leaves of that shape and dtype) -> position
        self.treedefs, self.positions = [], []
        mirrors = {}  # position -> the index of the parameter leaf whose shape its leaf shares, or None
        # A parameter tree of the same structure whose leaves all differ in shape: the shape of a state leaf
        # then says which parameter leaf it mirrors (moments, momentum) or that it mirrors none (counts).
        tagged = jax.tree.unflatten(jax.tree.structure(params), [jax.ShapeDtypeStruct((1, 7919 + i), jnp.float32)
                                                                 for i in range(len(jax.tree.leaves(params)))])
        for optimizer in optimizers:
            leaves, treedef = jax.tree.flatten(jax.eval_shape(optimizer.init, params))
            tags = jax.tree.leaves(jax.eval_shape(optimizer.init, tagged))
            seen = collections.Counter()
            positions = []
            for leaf, tag in zip(leaves, tags, strict=True):
                kind = (leaf.shape, leaf.dtype)
                position = storage.setdefault((*kind, seen[kind]), len(storage))
                mirror = tag.shape[1] - 7919 if tag.shape[:1] == (1,) and len(tag.shape) == 2 else None
                if mirrors.setdefault(position, mirror) != mirror:
                    raise ValueError("optimizers disagree on which parameter a shared state leaf mirrors")
                positions.append(position)
                seen[kind] += 1
            self.treedefs.append(treedef)
            self.positions.append(positions)
        self.kinds = [(shape, dtype) for shape, dtype, _ in storage]  # in position order
        self.mirrors = [mirrors[p] for p in range(len(self.kinds))]

    def empty(self) -> tuple[jax.Array, ...]:
        return tuple(jnp.zeros(shape, dtype) for shape, dtype in self.kinds)

    def read(self, choice: int, storage: tuple[jax.Array, ...]):
        """Optimizer `choice`'s optax state."""
        return jax.tree.unflatten(self.treedefs[choice], [storage[p] for p in self.positions[choice]])

    def write(self, choice: int, state, storage: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        storage = list(storage)
        for position, leaf in zip(self.positions[choice], jax.tree.leaves(state)):
            storage[position] = leaf
        return tuple(storage)
