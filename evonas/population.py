"""Population training: one compiled program trains and evaluates many genomes at once.

Every function here takes a leading member axis. Members are mapped with
`lax.map(..., batch_size=members_per_vmap)`: with 1 (the CPU default) members run one
after another inside the program, so every gene's `lax.switch` stays unbatched and only
the chosen branch executes; with more, that many members are vmapped side by side, which
is what keeps a GPU or TPU busy, at the price of computing every branch of a batched
switch. Either way the shapes depend only on the search space, so the programs compile
once per run, whatever genomes evolution proposes.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from evonas.models import Params, PopulationModel


@struct.dataclass
class Split:
    """A dataset split held on device: tokens int32[N, L] (0 pads), labels int32[N]."""

    tokens: jax.Array
    labels: jax.Array


@struct.dataclass
class MemberState:
    params: Params  # stored (largest-size) parameters, leading member axis
    opt_state: Any  # one optax state per optimizer choice; only the member's own is advanced


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    steps_per_call: int = 50  # train steps fused into one call: fewer host round trips, progress in between
    eval_batch_size: int = 256
    members_per_vmap: int = 1  # 1 on CPU: exact branches, no padding; raise on GPU/TPU
    clip_norm: float = 1.0


def make_optimizer(name: str, learning_rate, weight_decay, clip_norm: float) -> optax.GradientTransformation:
    """The optax optimizer of a genome's training genes; hyperparameters may be traced."""
    clip = optax.clip_by_global_norm(clip_norm)
    if name == "adamw":
        return optax.chain(clip, optax.adamw(learning_rate, weight_decay=weight_decay))
    if name == "lion":
        # Lion's sign updates are ~10x larger than Adam's at the same rate (Chen et al. 2023).
        return optax.chain(clip, optax.lion(learning_rate / 10.0, weight_decay=weight_decay * 10.0))
    if name == "sgd":
        return optax.chain(clip, optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=0.9))
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, lion or sgd")


def loss_fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Population:
    """Compiled init/train/evaluate over a chunk of members with different genomes."""

    def __init__(self, model: PopulationModel, config: TrainConfig = TrainConfig()):
        self.model, self.config = model, config
        self.space = model.space
        self.traces = 0  # each trace of a jitted function is one compilation
        self.init = jax.jit(self._counted(self._init))
        self.train = jax.jit(self._counted(self._train), donate_argnums=0)
        self.evaluate = jax.jit(self._counted(self._evaluate))
        self.loss_and_grads = jax.jit(self._counted(self._loss_and_grads))

    def _counted(self, fn):
        @functools.wraps(fn)
        def wrapper(*args):
            self.traces += 1
            return fn(*args)

        return wrapper

    def _map(self, fn, *xs):
        # lax.map vmaps its chunks even at batch_size=1, which would batch every switch index: map plainly then.
        batch_size = None if self.config.members_per_vmap == 1 else self.config.members_per_vmap
        return jax.lax.map(lambda args: fn(*args), xs, batch_size=batch_size)

    def _value(self, genome, name):
        return jnp.asarray(self.space.gene(name).choices)[genome[self.space.index(name)]]

    def _optimizers(self, genome):
        lr, wd = self._value(genome, "learning_rate"), self._value(genome, "weight_decay")
        names = self.space.gene("optimizer").choices
        return [make_optimizer(name, lr, wd, self.config.clip_norm) for name in names]

    def _init(self, keys: jax.Array, genomes: jax.Array) -> MemberState:
        def one(key, genome):
            params = self.model.init(key, genome)
            return MemberState(params, tuple(opt.init(params) for opt in self._optimizers(genome)))

        return self._map(one, keys, genomes)

    def _member_loss_and_grads(self, params, genome, tokens, labels, dropout_key):
        def member_loss(params):
            return loss_fn(self.model.apply(params, genome, tokens, tokens != 0, dropout_key), labels)

        return jax.value_and_grad(member_loss)(params)

    def _loss_and_grads(self, params: Params, genomes: jax.Array, tokens, labels, dropout_key):
        """Every member's loss and gradients on one shared batch (what `train` steps with)."""
        return self._map(lambda p, g: self._member_loss_and_grads(p, g, tokens, labels, dropout_key), params, genomes)

    def _train(self, states: MemberState, genomes: jax.Array, data: Split, key: jax.Array, start_step: jax.Array):
        """`steps_per_call` steps for every member; all members see the same batches and dropout keys."""
        key_data, key_dropout = jax.random.split(key)
        steps = start_step + jnp.arange(self.config.steps_per_call)

        def one(state, genome):
            optimizers = self._optimizers(genome)
            optimizer_index = genome[self.space.index("optimizer")]

            def step(state, step_index):
                batch_key = jax.random.fold_in(key_data, step_index)
                rows = jax.random.randint(batch_key, (self.config.batch_size,), 0, data.labels.shape[0])
                loss, grads = self._member_loss_and_grads(state.params, genome, data.tokens[rows], data.labels[rows],
                                                          jax.random.fold_in(key_dropout, step_index))

                def update_with(index):
                    updates, new = optimizers[index].update(grads, state.opt_state[index], state.params)
                    opt_state = tuple(new if i == index else s for i, s in enumerate(state.opt_state))
                    return MemberState(optax.apply_updates(state.params, updates), opt_state)

                branches = [functools.partial(update_with, i) for i in range(len(optimizers))]
                return jax.lax.switch(optimizer_index, branches), loss

            return jax.lax.scan(step, state, steps)

        return self._map(one, states, genomes)

    def _evaluate(self, states: MemberState, genomes: jax.Array, data: Split):
        """Accuracy and mean loss of every member on a split, read in fixed-size batches."""
        size = self.config.eval_batch_size
        count = data.labels.shape[0]
        num_batches = -(-count // size)
        pad = num_batches * size - count
        tokens = jnp.pad(data.tokens, ((0, pad), (0, 0))).reshape(num_batches, size, -1)
        labels = jnp.pad(data.labels, (0, pad)).reshape(num_batches, size)
        weights = (jnp.arange(num_batches * size) < count).reshape(num_batches, size)

        def one(state, genome):
            def batch(totals, xs):
                tokens, labels, weights = xs
                logits = self.model.apply(state.params, genome, tokens, tokens != 0)
                correct = jnp.sum(jnp.where(weights, logits.argmax(-1) == labels, 0))
                loss = jnp.sum(jnp.where(weights, optax.softmax_cross_entropy_with_integer_labels(logits, labels), 0))
                return (totals[0] + correct, totals[1] + loss), None

            (correct, loss), _ = jax.lax.scan(batch, (0.0, 0.0), (tokens, labels, weights))
            return correct / count, loss / count

        return self._map(one, states, genomes)
