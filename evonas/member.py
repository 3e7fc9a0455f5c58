"""What a device computes for its members: initialization, train steps and evaluation.

`steps_for(model, config, platform)` gives the `Steps` of one population form: `MemberSteps` runs the
members one after another, each gene an unbatched switch (`evonas.supernet`; the form for CPUs, where a
member's small kernels keep a core busy and nothing is spent on branches not taken), and `GroupedSteps`
runs them side by side, grouped at each block slot by the op they run (`evonas.grouped`; the form for
GPUs and TPUs). Both take and return the same member states, and give every member the losses and
gradients of its standalone model. Functions here see one device's members (`shard_map` splits them).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import struct

from evonas import inherit
from evonas.grouped import GroupedModel
from evonas.layers import Params
from evonas.optimizers import SharedOptimizerState, lr_schedule, make_optimizer
from evonas.supernet import PopulationModel
from evonas.width_view import WidthView


@struct.dataclass
class Split:
    """A dataset split held on device: tokens int32[N, L] (0 pads), labels int32[N]."""

    tokens: jax.Array
    labels: jax.Array


@struct.dataclass
class MemberState:
    params: Params  # stored (largest-size) parameters, leading member axis
    opt_state: tuple[jax.Array, ...]  # the member's own optimizer state, in the `SharedOptimizerState` layout


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
FORMS = ("auto", "member", "grouped")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    steps_per_call: int = 50  # train steps fused into one call: fewer host round trips, progress in between
    eval_batch_size: int = 256
    clip_norm: float = 1.0
    # "bfloat16": forward and backward in bfloat16, while the stored weights, the loss and the optimizer stay
    # float32; "auto": bfloat16 on GPUs and TPUs (whose matrix units run it several times faster), float32 on CPUs.
    compute_dtype: str = "auto"
    # "member": members one after another (CPUs); "grouped": side by side, grouped by op (GPUs, TPUs);
    # "auto": by the devices' platform.
    form: str = "auto"
    # The grouped form's members per tile, per op family (e.g. (("recurrent", 64),)); the rest from the population.
    tile_sizes: tuple[tuple[str, int], ...] = ()
    # Learning-rate schedule: 0 keeps each genome's rate constant; N > 0 warms it up linearly from 0 over
    # `warmup_fraction` of N steps, then decays it by a cosine to 0 at step N (`lr_schedule`).
    schedule_steps: int = 0
    warmup_fraction: float = 0.05
    # The member form runs a train call's steps on each member's state cut to its width (`evonas.width_view`)
    # at the widths where that leaves out at least this many stored parameters per member: below it the saving
    # per step does not pay for the cut's compilation (experiments/README.md, "Members cut to their width").
    # 0: at every width.
    width_view_min_saving: int = 2**16

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.schedule_steps < 0 or not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"schedule_steps must be >= 0 and warmup_fraction in [0, 1), got {self.schedule_steps} "
                             f"and {self.warmup_fraction}")

    def schedule(self) -> optax.Schedule | None:
        """The learning rate's multiplier per step count, or None for a constant rate."""
        return lr_schedule(self.schedule_steps, self.warmup_fraction) if self.schedule_steps else None


def loss_fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Steps:
    """A device's members: what both forms share (initialization, optimizer steps, batches)."""

    def __init__(self, model: PopulationModel, config: TrainConfig):
        self.model, self.config, self.space = model, config, model.space
        placeholders = [make_optimizer(name, 1.0, 0.0, config.clip_norm, config.schedule())
                        for name in self.space.gene("optimizer").choices]
        self.optimizer_state = SharedOptimizerState(placeholders, model.stored_shapes)

    def _optimizers(self, genome):
        lr, wd = self.model.value(genome, "learning_rate"), self.model.value(genome, "weight_decay")
        return [make_optimizer(name, lr, wd, self.config.clip_norm, self.config.schedule())
                for name in self.space.gene("optimizer").choices]

    def _switch_optimizer(self, genome, fn):
        """`fn(index, optimizer)` for the genome's optimizer, an unbatched switch per member."""
        optimizers = self._optimizers(genome)
        branches = [functools.partial(fn, i, optimizer) for i, optimizer in enumerate(optimizers)]
        return jax.lax.switch(genome[self.space.index("optimizer")], branches)

    def init_member(self, key: jax.Array, genome: jax.Array, start=None) -> MemberState:
        """A member's fresh state; with `start` (stored parameters, mask: `evonas.inherit`), the parameters the
        mask marks are taken from `start`, the others drawn afresh, and the optimizer state starts afresh."""
        params = self.model.init(key, genome)
        if start is not None:
            params = inherit.mix(params, *start)

        def init_with(index, optimizer):
            return self.optimizer_state.write(index, optimizer.init(params), self.optimizer_state.empty())

        return MemberState(params, self._switch_optimizer(genome, init_with))

    def init(self, keys: jax.Array, genomes: jax.Array, routes=None) -> MemberState:
        return jax.lax.map(lambda args: self.init_member(*args), (keys, genomes))

    def init_from(self, keys: jax.Array, genomes: jax.Array, params: Params, masks, routes=None) -> MemberState:
        """`init`, each member starting from its stored `params` where its mask says so (`init_member`)."""
        return jax.lax.map(lambda args: self.init_member(args[0], args[1], args[2:]), (keys, genomes, params, masks))

    def update(self, state: MemberState, genome: jax.Array, grads: Params) -> MemberState:
        """One optimizer step of one member."""

        def update_with(index, optimizer):
            own = self.optimizer_state.read(index, state.opt_state)
            updates, new = optimizer.update(grads, own, state.params)
            return updates, self.optimizer_state.write(index, new, state.opt_state)

        updates, opt_state = self._switch_optimizer(genome, update_with)
        return MemberState(optax.apply_updates(state.params, updates), opt_state)

    def batch(self, data: Split, key_data: jax.Array, step: jax.Array):
        rows = jax.random.randint(jax.random.fold_in(key_data, step), (self.config.batch_size,), 0,
                                  data.labels.shape[0])
        return data.tokens[rows], data.labels[rows]

    def _compute(self, params: Params) -> Params:
        return jax.tree.map(lambda p: p.astype(self.config.compute_dtype), params)

    def _eval_batches(self, data: Split):
        """The split in fixed-size batches: tokens, labels and weights (0 for padding examples)."""
        size, count = self.config.eval_batch_size, data.labels.shape[0]
        num_batches = -(-count // size)
        pad = num_batches * size - count
        tokens = jnp.pad(data.tokens, ((0, pad), (0, 0))).reshape(num_batches, size, -1)
        labels = jnp.pad(data.labels, (0, pad)).reshape(num_batches, size)
        weights = (jnp.arange(num_batches * size) < count).reshape(num_batches, size)
        return tokens, labels, weights

    @staticmethod
    def _scores(logits, labels, weights):
        correct = jnp.sum(jnp.where(weights, logits.argmax(-1) == labels, 0))
        loss = jnp.sum(jnp.where(weights, optax.softmax_cross_entropy_with_integer_labels(logits, labels), 0))
        return correct, loss


class MemberSteps(Steps):
    """Members one after another, each through `PopulationModel.apply`'s unbatched switches; a train call runs
    each member's steps on its state cut to its width (`evonas.width_view`)."""

    def __init__(self, model: PopulationModel, config: TrainConfig):
        super().__init__(model, config)
        self.views = {width: view for width in model.choices["width"]
                      if (view := WidthView(model, width)).saving >= config.width_view_min_saving}

    def _apply(self, width, params, genome, tokens, dropout_key=None, read=None) -> jax.Array:
        """Float32 logits at `width`, computed in the configured dtype from the float32 stored weights (or, with
        `read`, from a member's state cut to its width: `WidthView.read`)."""
        logits = self.model.apply_at_width(width, self._compute(params), genome, tokens, tokens != 0, dropout_key,
                                           read)
        return logits.astype(jnp.float32)

    def _member_loss_and_grads(self, params, genome, tokens, labels, dropout_key, width=None, read=None):
        """Loss and gradients of one member: through the width switch, or at a known `width` (with `read`)."""
        def at_width(width):
            def member_loss(params):
                return loss_fn(self._apply(width, params, genome, tokens, dropout_key, read), labels)

            return jax.value_and_grad(member_loss)(params)

        return self.model.at_width(genome, at_width) if width is None else at_width(width)

    def _step(self, state: MemberState, step_index, genome, data: Split, key_data, key_dropout, width=None,
              read=None):
        """One train step of one member (`_member_loss_and_grads`' width and read)."""
        tokens, labels = self.batch(data, key_data, step_index)
        loss, grads = self._member_loss_and_grads(state.params, genome, tokens, labels,
                                                  jax.random.fold_in(key_dropout, step_index), width, read)
        return self.update(state, genome, grads), loss

    def loss_and_grads(self, params, genomes, tokens, labels, dropout_key, routes=None):
        """Every member's loss and gradients on one shared batch (what `train` steps with)."""
        return jax.lax.map(lambda args: self._member_loss_and_grads(*args, tokens, labels, dropout_key),
                           (params, genomes))

    def train(self, states: MemberState, genomes, data: Split, key, start_step, routes=None, active=None):
        """`steps_per_call` steps for every member, each member's after the last one's. With one key, all
        members see the same batches and dropout masks; with a key per member, each draws its own. Members
        not `active` (bool per member; None: all are) are skipped by a branch of their own: they do no work,
        keep their state and report NaN losses."""
        steps = start_step + jnp.arange(self.config.steps_per_call)

        def one(args):
            state, genome, key, member_active = args
            key_data, key_dropout = jax.random.split(key)

            def run(state):
                step = functools.partial(self._step, genome=genome, data=data, key_data=key_data,
                                         key_dropout=key_dropout)
                if self.views:  # a width switch around each width's steps
                    return self.model.at_width(genome, lambda width: self._steps_at_width(width, state, genome,
                                                                                          step, steps))
                return jax.lax.scan(step, state, steps)  # one step body, the width switch inside: a smaller program

            if active is None:
                return run(state)
            return jax.lax.cond(member_active, run, lambda state: (state, jnp.full(steps.shape, jnp.nan)), state)

        flags = jnp.ones(genomes.shape[:1], bool) if active is None else active
        return jax.lax.map(one, (states, genomes, jnp.broadcast_to(key, genomes.shape[:1]), flags))

    def _steps_at_width(self, width, state: MemberState, genome, step, steps):
        """A member's `step`s at `width`, on its state cut to its width where it has a `WidthView` (what it does not
        use is neither read, updated nor copied), written back after the last one."""
        view, mirrors = self.views.get(width), self.optimizer_state.mirrors
        if view is None:
            return jax.lax.scan(functools.partial(step, width=width), state, steps)
        narrow = MemberState(*view.narrow_state(state.params, state.opt_state, mirrors, genome))
        narrow, losses = jax.lax.scan(functools.partial(step, width=width, read=view.read), narrow, steps)
        widened = view.widen_state(state.params, state.opt_state, narrow.params, narrow.opt_state, mirrors, genome)
        return MemberState(*widened), losses

    def evaluate(self, states: MemberState, genomes, data: Split, routes=None):
        """Accuracy and mean loss of every member on a split, read in fixed-size batches."""
        batches, count = self._eval_batches(data), data.labels.shape[0]

        def one(args):
            state, genome = args

            def at_width(width):
                def batch(totals, xs):
                    tokens, labels, weights = xs
                    correct, loss = self._scores(self._apply(width, state.params, genome, tokens), labels, weights)
                    return (totals[0] + correct, totals[1] + loss), None

                (correct, loss), _ = jax.lax.scan(batch, (0.0, 0.0), batches)
                return correct / count, loss / count

            return self.model.at_width(genome, at_width)

        return jax.lax.map(one, (states, genomes))


class GroupedSteps(Steps):
    """Members side by side through `GroupedModel`, routed by `routes` (its `schedule` of these members)."""

    def __init__(self, model: PopulationModel, config: TrainConfig):
        super().__init__(model, config)
        self._grouped = {}

    def grouped(self, num_members: int) -> GroupedModel:
        """The grouped form for a device's `num_members` members (tile sizes depend on it)."""
        if num_members not in self._grouped:
            self._grouped[num_members] = GroupedModel(self.model, num_members, dict(self.config.tile_sizes))
        return self._grouped[num_members]

    def _logits(self, params, genomes, routes, tokens, dropout_key=None):
        grouped = self.grouped(genomes.shape[0])
        logits = grouped.apply(self._compute(params), genomes, routes, tokens, tokens != 0, dropout_key)
        return logits.astype(jnp.float32)

    def loss_and_grads(self, params, genomes, tokens, labels, dropout_key, routes=None):
        def total(params):
            logits = self._logits(params, genomes, routes, tokens, dropout_key)
            labels_per_member = jnp.broadcast_to(labels, logits.shape[:2])
            losses = jax.vmap(loss_fn)(logits, labels_per_member)
            return losses.sum(), losses

        (_, losses), grads = jax.value_and_grad(total, has_aux=True)(params)
        return losses, grads

    def train(self, states: MemberState, genomes, data: Split, key, start_step, routes=None, active=None):
        """`steps_per_call` steps, every member's step at once. With one key, all members see the same batches
        and dropout masks; with a key per member, each draws its own. Members not `active` (bool per member;
        None: all are) keep their state and report NaN losses; `routes` that leave them out of every tile
        (`GroupedModel.schedule`'s `active`) skip their blocks, the bulk of a step's work."""
        steps = start_step + jnp.arange(self.config.steps_per_call)
        shared = key.ndim == 0
        key_data, key_dropout = jax.random.split(key) if shared else jax.vmap(jax.random.split, out_axes=1)(key)

        def step(states, step_index):
            if shared:
                tokens, labels = self.batch(data, key_data, step_index)
                dropout_key = jax.random.fold_in(key_dropout, step_index)
            else:
                tokens, labels = jax.vmap(self.batch, (None, 0, None))(data, key_data, step_index)
                dropout_key = jax.vmap(jax.random.fold_in, (0, None))(key_dropout, step_index)
            losses, grads = self.loss_and_grads(states.params, genomes, tokens, labels, dropout_key, routes)
            updated = jax.vmap(self.update)(states, genomes, grads)
            if active is None:
                return updated, losses
            kept = jax.tree.map(lambda new, old: jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                                updated, states)
            return kept, jnp.where(active, losses, jnp.nan)

        states, losses = jax.lax.scan(step, states, steps)
        return states, losses.T

    def evaluate(self, states: MemberState, genomes, data: Split, routes=None):
        count = data.labels.shape[0]

        def batch(totals, xs):
            tokens, labels, weights = xs
            logits = self._logits(states.params, genomes, routes, tokens)
            correct, loss = jax.vmap(self._scores, (0, None, None))(logits, labels, weights)
            return (totals[0] + correct, totals[1] + loss), None

        zeros = jnp.zeros(genomes.shape[:1])
        (correct, loss), _ = jax.lax.scan(batch, (zeros, zeros), self._eval_batches(data))
        return correct / count, loss / count


def resolve_form(form: str, platform: str) -> str:
    """The population form to run: as asked, or for "auto", "member" on CPU and "grouped" elsewhere."""
    if form != "auto":
        return form
    return "member" if platform == "cpu" else "grouped"


def resolve_dtype(compute_dtype: str, platform: str) -> str:
    """The compute dtype to run: as asked, or for "auto", float32 on CPU and bfloat16 elsewhere."""
    if compute_dtype != "auto":
        return compute_dtype
    return "float32" if platform == "cpu" else "bfloat16"


def steps_for(model: PopulationModel, config: TrainConfig, platform: str) -> Steps:
    """The population form's steps for `platform`, with "auto" settings resolved."""
    form = resolve_form(config.form, platform)
    config = dataclasses.replace(config, form=form, compute_dtype=resolve_dtype(config.compute_dtype, platform))
    return {"member": MemberSteps, "grouped": GroupedSteps}[form](model, config)
