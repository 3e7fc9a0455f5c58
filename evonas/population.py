"""Population training: compiled programs that initialize, train and evaluate many genomes at once.

Every program takes a leading member axis, split evenly over every device of every process
(`evonas.sharding`; members are independent, so they never communicate; a CPU host has one device per
core, `evonas.cpu_devices`). What each device computes for its members is `evonas.member`'s `Steps` of
the platform's population form: on CPUs one member after another, on GPUs and TPUs all of them side by
side, grouped by op, routed by a schedule the host computes for each chunk (`routes`). Shapes depend
only on the search space and the chunk size, so the programs compile once per run, whatever genomes
evolution proposes.
"""

import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from evonas import hurdles as hurdles_lib
from evonas import sharding
from evonas.hurdles import Hurdles
from evonas.member import MemberState, Split, TrainConfig, steps_for
from evonas.models import Architecture, forward_flops
from evonas.supernet import PopulationModel

FLOAT_BYTES = 4


class Population:
    """Compiled init/train/evaluate over chunks of members with different genomes.

    `init(keys, genomes, routes, start_from)`, `train(states, genomes, data, key, start_step, routes, active)`,
    `evaluate(states, genomes, data, routes)` and `loss_and_grads(params, genomes, tokens, labels, dropout_key,
    routes)` take members placed with `distribute` (a multiple of the device count) and `routes(genomes)`;
    `fit` runs a whole generation.
    """

    def __init__(self, model: PopulationModel, config: TrainConfig | None = None, mesh: Mesh | None = None):
        config = TrainConfig() if config is None else config
        self.model, self.config, self.space = model, config, model.space
        self.mesh = sharding.member_mesh() if mesh is None else mesh
        self.steps = steps_for(model, config, sharding.platform(self.mesh))
        self.grouped = hasattr(self.steps, "grouped")
        self.traces = 0  # each trace of a program is one compilation
        jit = functools.partial(jax.jit, compiler_options=sharding.compiler_options(self.mesh))
        self.programs = {
            "init": jit(self._sharded(self.steps.init, "mmd")),
            "init_from": jit(self._sharded(self.steps.init_from, "mmmmd")),
            "train": jit(self._sharded(self.steps.train, "mmrkrdm"), donate_argnums=0),
            "evaluate": jit(self._sharded(self.steps.evaluate, "mmrd")),
            "loss_and_grads": jit(self._sharded(self.steps.loss_and_grads, "mmrrrd")),
            "keep_best": jax.jit(keep_best, donate_argnums=(0, 1, 2)),
        }

    def _sharded(self, fn, layout: str):
        sharded = sharding.shard(fn, self.mesh, layout)

        @functools.wraps(fn)
        def counted(*args):
            self.traces += 1
            return sharded(*args)

        return counted

    # ---- the programs, routed -------------------------------------------------------------

    def init(self, keys, genomes, routes=None, start_from=None) -> MemberState:
        """Fresh members; with `start_from` (placed stored parameters and masks, `evonas.inherit`), each starting
        from its stored parameters where its mask says so."""
        if start_from is None:
            return self.programs["init"](keys, genomes, self._routes_for(genomes, routes))
        return self.programs["init_from"](keys, genomes, *start_from, self._routes_for(genomes, routes))

    def train(self, states, genomes, data, key, start_step, routes=None, active=None):
        """`steps_per_call` steps of the members `active` (placed bool per member; None: all); the others keep
        their state (`evonas.member`'s `train`)."""
        if active is None:
            active = self.distribute(np.ones(genomes.shape[0], bool))
        return self.programs["train"](states, genomes, data, key, start_step, self._routes_for(genomes, routes),
                                      active)

    def evaluate(self, states, genomes, data, routes=None):
        return self.programs["evaluate"](states, genomes, data, self._routes_for(genomes, routes))

    def loss_and_grads(self, params, genomes, tokens, labels, dropout_key, routes=None):
        return self.programs["loss_and_grads"](params, genomes, tokens, labels, dropout_key,
                                               self._routes_for(genomes, routes))

    def routes(self, genomes: np.ndarray, active: np.ndarray | None = None) -> Any:
        """What the programs need to know, besides the genomes, of how a chunk's members run: for the grouped
        form, each device's schedule (host arrays with a leading device axis), in which members not `active`
        run no block; None for the member form."""
        if not self.grouped:
            return None
        genomes = np.asarray(genomes)
        active = np.ones(len(genomes), bool) if active is None else np.asarray(active)
        per_device = len(genomes) // self.num_devices
        grouped = self.steps.grouped(per_device)
        schedules = [grouped.schedule(genomes[d * per_device:(d + 1) * per_device],
                                      active[d * per_device:(d + 1) * per_device]) for d in range(self.num_devices)]
        return jax.tree.map(lambda *s: np.stack(s), *schedules)

    def _routes_for(self, genomes, routes):
        if routes is None and self.grouped:
            routes = self.distribute(self.routes(np.asarray(genomes)))
        return routes

    # ---- placement and memory ---------------------------------------------------------------

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def padded_size(self, num_members: int) -> int:
        return sharding.padded_size(num_members, self.num_devices)

    def replicate(self, tree):
        return sharding.replicate(self.mesh, tree)

    def distribute(self, tree):
        return sharding.distribute(self.mesh, tree)

    def put_split(self, split) -> Split:
        """A task split (anything with `tokens` and `labels`) placed on every device."""
        return self.replicate(Split(split.tokens, split.labels))

    def state_shapes(self, num_members: int, placement: NamedSharding | None = None) -> MemberState:
        """The shapes of what `init` returns for `num_members` members, found without tracing it."""

        def stacked(shape, dtype):
            return jax.ShapeDtypeStruct((num_members, *shape), dtype, sharding=placement)

        params = jax.tree.map(lambda leaf: stacked(leaf.shape, leaf.dtype), self.model.stored_shapes)
        return MemberState(params, tuple(stacked(shape, dtype) for shape, dtype in self.steps.optimizer_state.kinds))

    def member_bytes(self) -> int:
        """Bytes of one member's state (stored parameters and optimizer states), found without allocating."""
        return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(self.state_shapes(1)))

    def activation_bytes(self, length: int) -> int:
        """Bytes of one member's activations that the grouped form holds at once (all of a device's members run
        together; the member form runs one at a time, and counts none): per block slot, a few copies of the
        residual stream and of the slot's buffer, for training or for an evaluation batch."""
        if not self.grouped:
            return 0
        stream = max(self.config.batch_size, self.config.eval_batch_size // 2) * length * self.model.max_width
        return FLOAT_BYTES * self.model.num_slots * (8 * stream + 2 * self.model.op_buffer_size)

    def chunk_size(self, memory_budget_bytes: int, length: int | None = None) -> int:
        """Members trained at once within the budget. Each holds its state, the donated step's new state and
        the evaluation's copy at worst, and in the grouped form its activations."""
        per_member = 3 * self.member_bytes() + self.activation_bytes(length or self.model.max_length)
        fitting = memory_budget_bytes // per_member
        return max(self.num_devices, fitting // self.num_devices * self.num_devices)

    def placement(self, genomes: np.ndarray) -> np.ndarray:
        """An order of a chunk's members that gives every device about the same work (matmul FLOPs; the
        rest of a member-step's time is about the same per member). Each member's result depends on its
        own genome and key only, not on where it runs."""
        costs = np.array([forward_flops(Architecture.from_genome(self.space, genome), self.model.max_length,
                                        self.model.num_classes) for genome in genomes])
        return sharding.balanced_order(costs, self.num_devices)

    def arrange(self, keys: jax.Array, genomes: np.ndarray, chunk: int) -> tuple[np.ndarray, jax.Array, np.ndarray]:
        """Members padded to whole chunks of `chunk` (`pad_members`) and placed within each chunk
        (`placement`). Returns `order`, the keys and the genomes: arranged member i is member `order[i]` of
        the padded input, so `results[np.argsort(order)][:len(genomes)]` puts results back in input order."""
        total = -(-len(genomes) // chunk) * chunk
        genomes = sharding.pad_members(np.asarray(genomes), total)
        order = np.concatenate([start + self.placement(genomes[start:start + chunk]) for start in range(0, total, chunk)])
        return order, sharding.pad_members(keys, total)[order], genomes[order]

    # ---- compiling and running ------------------------------------------------------------------

    def compile(self, keys: jax.Array, genomes: np.ndarray, train: Split, key_train: jax.Array,
                validation: Split | None = None, start_from=None) -> dict[str, jax.stages.Compiled]:
        """Compiles init (with `start_from`, placed starting parameters and masks: init_from), train and (given a
        validation split) evaluate for chunks shaped like `genomes` (host genomes; keys placed with
        `distribute`), side by side. Each is lowered (traced: Python, holding the
        GIL) in this thread, the train program first, and compiled by XLA (outside the GIL) in a thread of its
        own while the next is lowered: train's compilation, the longest, starts as early as it can. Calls
        with these shapes then reuse the programs. Measured in experiments/README.md."""
        states = self.state_shapes(len(genomes), NamedSharding(self.mesh, P(sharding.MEMBERS)))
        placed_genomes, routes = self.distribute(np.asarray(genomes)), self.distribute(self.routes(genomes))
        programs = {"train": (states, placed_genomes, train, key_train, self.replicate(np.int32(0)), routes,
                              self.distribute(np.ones(len(genomes), bool))),
                    **({"init": (keys, placed_genomes, routes)} if start_from is None else
                       {"init_from": (keys, placed_genomes, *start_from, routes)})}
        if validation is not None:
            programs["evaluate"] = (states, placed_genomes, validation, routes)
        with concurrent.futures.ThreadPoolExecutor(len(programs)) as pool:
            futures = {name: pool.submit(self.programs[name].lower(*args).compile) for name, args in programs.items()}
            return {name: future.result() for name, future in futures.items()}

    def fit(self, keys: jax.Array, genomes: np.ndarray, train: Split, evaluations: dict[str, Split],
            key_train: jax.Array, steps: int, chunk_size: int, keep_params: bool = False,
            progress: Callable[[int], Any] | None = None, select: Split | None = None,
            eval_every: int | None = None, hurdles: Hurdles | None = None, start_from=None) -> dict[str, Any]:
        """Initializes, trains and evaluates members, `chunk_size` at a time, all chunks through the same
        compiled programs.

        Args:
            keys: one init key per member. genomes: int32[N, G] on the host.
            train: the training split, and evaluations: the splits to score on (name -> split), placed with
                `put_split`; the first is compiled with the others.
            key_train: the batch and dropout key, shared by every member, or one per member [N].
            steps: per member, a multiple of `config.steps_per_call`.
            chunk_size: members per chunk, e.g. from `chunk_size(budget)`.
            keep_params: also return every member's trained stored parameters (host arrays).
            progress: called after each train call with the member-steps it took (padding and stopped members
                excluded).
            select: a split (placed with `put_split`) that picks each member's parameters: scored every
                `eval_every` steps (a multiple of `config.steps_per_call`; None: every call), at each hurdle
                and at the last, the parameters of each member's best score so far are kept on device, and the
                evaluations then score those, not the last step's. Only this split picks; the evaluations pick
                nothing.
            hurdles: progressive hurdles (`evonas.hurdles`, steps multiples of `config.steps_per_call`): at each,
                the members still training are scored, by their best score so far on `select` if given, else
                on the first evaluation split, over all chunks at once. Those below the stage's hurdle stop:
                their parameters and scores stay those of the stop, and their remaining steps are skipped in
                the same programs. With several chunks, each chunk's state waits on the host between stages.
            start_from: per member, stored parameters (host tree, leading axis N) and the mask of those it starts
                from (`evonas.inherit.stored_mask`, stacked); the rest is drawn from `keys`. None: all drawn.

        Returns:
            On the host, in the input order: `losses` (every train step's loss [N, steps], NaN after a member's
            stop), `steps` (the steps each member trained [N]), per evaluation split `<name>_accuracy` and
            `<name>_loss` [N], with `keep_params`, `params`, and with `select`, `best_step` (steps trained at
            the kept parameters) and `best_accuracy` (their score on `select`).
        """
        every = self.config.steps_per_call if eval_every is None else eval_every
        if select is not None and (every < 1 or every % self.config.steps_per_call):
            raise ValueError(f"eval_every must be a positive multiple of steps_per_call "
                             f"{self.config.steps_per_call}, got {every}")
        first = next(iter(evaluations.values()), None)
        if hurdles is not None:
            hurdles.check(steps, self.config.steps_per_call)
            if select is None and first is None:
                raise ValueError("hurdles need a split to judge on: select, or an evaluation split")
        num = len(genomes)
        chunk = self.padded_size(min(chunk_size, num))
        order, keys, genomes = self.arrange(keys, genomes, chunk)
        if start_from is not None:
            start_from = jax.tree.map(lambda a: sharding.pad_members(np.asarray(a), len(genomes))[order], start_from)
        shared_key = jax.random.key_data(key_train).ndim == 1
        if not shared_key:
            key_train = sharding.pad_members(key_train, len(genomes))[order]
        key_data = np.asarray(jax.random.key_data(keys))
        self.compile(jax.random.wrap_key_data(self.distribute(key_data[:chunk])), genomes[:chunk], train,
                     self.replicate(key_train) if shared_key else self.distribute(key_train[:chunk]), first,
                     None if start_from is None else self.distribute(jax.tree.map(lambda a: a[:chunk], start_from)))
        stages = [steps] if hurdles is None else hurdles.stages(steps)
        starts = range(0, len(genomes), chunk)
        runs: list[Any] = [None] * len(starts)  # per chunk: its states, best parameters and losses so far
        active = order < num  # padding members (copies of the last) are dropped: they never train
        trained = np.zeros(len(genomes), np.int32)
        begin = 0
        for end in stages:
            scores = np.full(len(genomes), -np.inf)
            for c, start in enumerate(starts):
                part = slice(start, start + chunk)
                placed = {"genomes": self.distribute(genomes[part]), "routes": self.distribute(self.routes(genomes[part])),
                          "key": self.replicate(key_train) if shared_key else self.distribute(key_train[part])}
                placed["train_routes"] = (placed["routes"] if active[part].all() else
                                          self.distribute(self.routes(genomes[part], active[part])))
                if runs[c] is None:
                    states = self.init(jax.random.wrap_key_data(self.distribute(key_data[part])), placed["genomes"],
                                       placed["routes"], None if start_from is None else
                                       self.distribute(jax.tree.map(lambda a, part=part: a[part], start_from)))
                    runs[c] = {"states": states, "best": None, "losses": []}
                elif len(starts) > 1:  # back from the host
                    runs[c] |= {"states": self.distribute(runs[c]["states"]), "best": self.distribute(runs[c]["best"])}
                run = runs[c]
                self._train_stage(run, placed, train, active[part], begin, end, stages, select, every, progress)
                if end == steps:
                    runs[c] = self._results(run, placed, evaluations, keep_params)
                    continue
                scores[part] = self._hurdle_scores(run, placed, select if select is not None else first,
                                                   select is not None)
                if len(starts) > 1:  # the next chunk needs the device
                    runs[c] |= {"states": jax.tree.map(sharding.to_host, run["states"]),
                                "best": jax.tree.map(sharding.to_host, run["best"])}
            trained[active] = end
            if end < steps:
                active = hurdles_lib.passing(scores, active, hurdles.quantile)
            begin = end
        unordered = np.argsort(order)
        results = jax.tree.map(lambda *parts: np.concatenate(parts)[unordered][:num], *runs)
        return results | {"steps": trained[unordered][:num]}

    def _train_stage(self, run, placed, train, active, begin, end, stages, select, every, progress) -> None:
        """Trains a chunk's `active` members (host bool) from step `begin` to `end`, keeping with `select` each
        member's best parameters at its evaluation steps; appends the steps' losses to the run's, on the host."""
        spc = self.config.steps_per_call
        if not active.any():
            run["losses"].append(np.full((len(active), end - begin), np.nan, np.float32))
            return
        flags, losses = self.distribute(active), []
        for call in range(begin // spc, end // spc):
            start_step = self.replicate(np.int32(call * spc))
            run["states"], call_losses = self.train(run["states"], placed["genomes"], train, placed["key"], start_step,
                                                    placed["train_routes"], flags)
            losses.append(call_losses)
            if progress is not None:
                progress(spc * int(active.sum()))
            done = (call + 1) * spc
            if select is not None and (done % every == 0 or done in stages):
                accuracy, loss = self.evaluate(run["states"], placed["genomes"], select, placed["routes"])
                if run["best"] is None:
                    run["best"] = (jax.tree.map(jnp.copy, run["states"].params), jnp.full_like(accuracy, -np.inf),
                                   jnp.zeros_like(accuracy, np.int32))
                run["best"] = self.programs["keep_best"](*run["best"], run["states"].params, accuracy, loss,
                                                         np.int32(done))
        run["losses"].append(np.concatenate([sharding.to_host(x) for x in losses], axis=1))

    def _hurdle_scores(self, run, placed, judge: Split, by_best: bool) -> np.ndarray:
        """A chunk's scores at a hurdle: each member's best score so far (`by_best`), or its accuracy on `judge`
        now; -inf for a member whose losses or score are not finite."""
        if by_best:
            return sharding.to_host(run["best"][1])
        accuracy, loss = self.evaluate(run["states"], placed["genomes"], judge, placed["routes"])
        finite = np.isfinite(np.concatenate(run["losses"], axis=1)).all(axis=1) & np.isfinite(sharding.to_host(loss))
        return np.where(finite, sharding.to_host(accuracy), -np.inf)

    def _results(self, run, placed, evaluations: dict[str, Split], keep_params: bool) -> dict[str, np.ndarray]:
        """A chunk's results on the host once trained: its losses, evaluations and, as asked, parameters."""
        states, best = run["states"], run["best"]
        result = {"losses": np.concatenate(run["losses"], axis=1)}
        if best is not None:
            states = MemberState(best[0], states.opt_state)
            result |= {"best_accuracy": sharding.to_host(best[1]), "best_step": sharding.to_host(best[2])}
        for name, split in evaluations.items():
            accuracy, loss = self.evaluate(states, placed["genomes"], split, placed["routes"])
            result |= {f"{name}_accuracy": sharding.to_host(accuracy), f"{name}_loss": sharding.to_host(loss)}
        if keep_params:
            result["params"] = jax.tree.map(sharding.to_host, states.params)
        return result


def keep_best(best_params, best_accuracy, best_step, params, accuracy, loss, step):
    """Each member's parameters of its best score so far: the new ones where `accuracy` beats the best (a
    diverged member's, of non-finite loss, never do; ties keep the earlier step)."""
    better = jnp.isfinite(loss) & (accuracy > best_accuracy)

    def pick(new, old):
        return jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)

    return (jax.tree.map(pick, params, best_params), jnp.where(better, accuracy, best_accuracy),
            jnp.where(better, step, best_step))
