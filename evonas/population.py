"""Population training: one compiled program trains and evaluates many genomes at once.

Every function here takes a leading member axis, split evenly over every device of every
process with `shard_map` (members are independent, so they never communicate); a CPU host
has one device per core (`evonas.cpu_devices`), so its cores train members side by side. On each
device, members are mapped with `lax.map(..., batch_size=members_per_vmap)`: with 1 (the
CPU default) they run one after another inside the program, so every gene's `lax.switch`
stays unbatched and only the chosen branch executes; with more, that many members are
vmapped side by side, which is what keeps a GPU or TPU busy, at the price of computing
every branch of a batched switch. Either way the shapes depend only on the search space,
so the programs compile once per run, whatever genomes evolution proposes.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from evonas.models import Architecture, Params, PopulationModel, forward_flops


@struct.dataclass
class Split:
    """A dataset split held on device: tokens int32[N, L] (0 pads), labels int32[N]."""

    tokens: jax.Array
    labels: jax.Array


@struct.dataclass
class MemberState:
    params: Params  # stored (largest-size) parameters, leading member axis
    opt_state: tuple[jax.Array, ...]  # the member's own optimizer state, in the `SharedOptimizerState` layout


COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    steps_per_call: int = 50  # train steps fused into one call: fewer host round trips, progress in between
    eval_batch_size: int = 256
    members_per_vmap: int = 1  # 1 on CPU: exact branches, no padding; raise on GPU/TPU
    clip_norm: float = 1.0
    # "bfloat16": forward and backward in bfloat16 (for GPUs and TPUs), while the stored weights, the loss
    # and the optimizer stay float32.
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")


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
        for optimizer in optimizers:
            leaves, treedef = jax.tree.flatten(jax.eval_shape(optimizer.init, params))
            seen = collections.Counter()
            positions = []
            for leaf in leaves:
                kind = (leaf.shape, leaf.dtype)
                positions.append(storage.setdefault((*kind, seen[kind]), len(storage)))
                seen[kind] += 1
            self.treedefs.append(treedef)
            self.positions.append(positions)
        self.kinds = [(shape, dtype) for shape, dtype, _ in storage]  # in position order

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


MEMBERS = "members"  # the one mesh axis: population members are split over it


def compiler_options(mesh: Mesh) -> dict[str, int] | None:
    """XLA options of the population programs. On CPU, LLVM's -O1 instead of -O2: their thousands of small
    kernels (every branch of every switch) compiled 14% faster (tiny space) and ran 0-20% faster per genome;
    the standalone models' programs gained nothing from it (measured in experiments/README.md)."""
    return {"xla_backend_optimization_level": 1} if mesh.devices.flat[0].platform == "cpu" else None


def member_mesh() -> Mesh:
    """Every device of every process on the member axis."""
    return Mesh(np.asarray(jax.devices()), (MEMBERS,))


def loss_fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Population:
    """Compiled init/train/evaluate over a chunk of members with different genomes."""

    def __init__(self, model: PopulationModel, config: TrainConfig = TrainConfig(), mesh: Mesh | None = None):
        self.model, self.config = model, config
        self.space = model.space
        self.mesh = member_mesh() if mesh is None else mesh
        self.traces = 0  # each trace of a jitted function is one compilation
        placeholder_optimizers = [make_optimizer(name, 1.0, 0.0, config.clip_norm)
                                  for name in self.space.gene("optimizer").choices]
        self.optimizer_state = SharedOptimizerState(placeholder_optimizers, model.stored_shapes)
        jit = functools.partial(jax.jit, compiler_options=compiler_options(self.mesh))
        self.init = jit(self._sharded(self._init, "mm"))
        self.train = jit(self._sharded(self._train, "mmrkr"), donate_argnums=0)
        self.evaluate = jit(self._sharded(self._evaluate, "mmr"))
        self.loss_and_grads = jit(self._sharded(self._loss_and_grads, "mmrrr"))

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def padded_size(self, num_members: int) -> int:
        """The smallest member count at least `num_members` that splits evenly over the devices."""
        return -(-num_members // self.num_devices) * self.num_devices

    def _sharded(self, fn, layout: str):
        """Counts traces and splits `fn` over devices; `layout` says per argument: m(ember axis), r(eplicated),
        or k (a key: replicated if scalar, else one per member)."""

        @functools.wraps(fn)
        def wrapper(*args):
            self.traces += 1
            num_members = jax.tree.leaves(args[0])[0].shape[0]
            if num_members % self.num_devices:
                raise ValueError(f"{num_members} members do not split evenly over {self.num_devices} devices; "
                                 f"pad them to population.padded_size({num_members})")
            specs = tuple(P() if kind == "r" or (kind == "k" and arg.ndim == 0) else P(MEMBERS)
                          for kind, arg in zip(layout, args))
            return jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=P(MEMBERS), check_vma=False)(*args)

        return wrapper

    def replicate(self, tree):
        """Places host arrays on every device (across processes too), e.g. a dataset split."""
        return self._place(tree, P())

    def put_split(self, split) -> Split:
        """A task split (anything with `tokens` and `labels`) placed on every device."""
        return self.replicate(Split(split.tokens, split.labels))

    def distribute(self, tree):
        """Places host arrays with a leading member axis, split over the devices."""
        return self._place(tree, P(MEMBERS))

    def _place(self, tree, spec):
        sharding = NamedSharding(self.mesh, spec)

        def place(leaf):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
            leaf = np.asarray(leaf)
            return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

        return jax.tree.map(place, tree)

    def _map(self, fn, *xs):
        # lax.map vmaps its chunks even at batch_size=1, which would batch every switch index: map plainly then.
        batch_size = None if self.config.members_per_vmap == 1 else self.config.members_per_vmap
        return jax.lax.map(lambda args: fn(*args), xs, batch_size=batch_size)

    def _optimizers(self, genome):
        lr, wd = self.model.value(genome, "learning_rate"), self.model.value(genome, "weight_decay")
        names = self.space.gene("optimizer").choices
        return [make_optimizer(name, lr, wd, self.config.clip_norm) for name in names]

    def _init_member(self, key: jax.Array, genome: jax.Array) -> MemberState:
        params = self.model.init(key, genome)
        optimizers = self._optimizers(genome)

        def init_with(index):
            return self.optimizer_state.write(index, optimizers[index].init(params), self.optimizer_state.empty())

        branches = [functools.partial(init_with, i) for i in range(len(optimizers))]
        return MemberState(params, jax.lax.switch(genome[self.space.index("optimizer")], branches))

    def _init(self, keys: jax.Array, genomes: jax.Array) -> MemberState:
        return self._map(self._init_member, keys, genomes)

    def state_shapes(self, num_members: int, sharding: NamedSharding | None = None) -> MemberState:
        """The shapes of what `init` returns for `num_members` members, found without tracing it."""

        def stacked(shape, dtype):
            return jax.ShapeDtypeStruct((num_members, *shape), dtype, sharding=sharding)

        params = jax.tree.map(lambda leaf: stacked(leaf.shape, leaf.dtype), self.model.stored_shapes)
        return MemberState(params, tuple(stacked(shape, dtype) for shape, dtype in self.optimizer_state.kinds))

    def member_bytes(self) -> int:
        """Bytes of one member's state (stored parameters and optimizer states), found without allocating."""
        return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(self.state_shapes(1)))

    def chunk_size(self, memory_budget_bytes: int) -> int:
        """Members trained at once within the budget. Each holds its state, the donated step's new state and
        the evaluation's copy at worst; activations are per device, for one member at a time."""
        fitting = memory_budget_bytes // (3 * self.member_bytes())
        return max(self.num_devices, fitting // self.num_devices * self.num_devices)

    def compile(self, keys: jax.Array, genomes: jax.Array, train: Split, key_train: jax.Array,
                validation: Split | None = None) -> dict[str, jax.stages.Compiled]:
        """Compiles init, train and (given a validation split) evaluate for chunks placed like `keys` and
        `genomes`, side by side. Each is lowered (traced: Python, holding the GIL) in this thread, the train
        program first, and compiled by XLA (outside the GIL) in a thread of its own while the next is lowered:
        train's compilation, the longest, starts as early as it can. Calls with these shapes then reuse the
        programs. Measured in experiments/README.md."""
        states = self.state_shapes(len(genomes), NamedSharding(self.mesh, P(MEMBERS)))
        programs = {"train": (self.train, states, genomes, train, key_train, self.replicate(np.int32(0))),
                    "init": (self.init, keys, genomes)}
        if validation is not None:
            programs["evaluate"] = (self.evaluate, states, genomes, validation)
        with concurrent.futures.ThreadPoolExecutor(len(programs)) as pool:
            futures = {name: pool.submit(fn.lower(*args).compile) for name, (fn, *args) in programs.items()}
            return {name: future.result() for name, future in futures.items()}

    def placement(self, genomes: np.ndarray) -> np.ndarray:
        """An order of a chunk's members that gives every device about the same work (matmul FLOPs; the
        rest of a member-step's time is about the same per member). Each member's result depends on its
        own genome and key only, not on where it runs."""
        costs = np.array([forward_flops(Architecture.from_genome(self.space, genome), self.model.max_length,
                                        self.model.num_classes) for genome in genomes])
        return balanced_order(costs, self.num_devices)

    def arrange(self, keys: jax.Array, genomes: np.ndarray, chunk: int) -> tuple[np.ndarray, jax.Array, np.ndarray]:
        """Members padded to whole chunks of `chunk` (`pad_members`) and placed within each chunk
        (`placement`). Returns `order`, the keys and the genomes: arranged member i is member `order[i]` of
        the padded input, so `results[np.argsort(order)][:len(genomes)]` puts results back in input order."""
        total = -(-len(genomes) // chunk) * chunk
        genomes = pad_members(np.asarray(genomes), total)
        order = np.concatenate([start + self.placement(genomes[start:start + chunk]) for start in range(0, total, chunk)])
        return order, pad_members(keys, total)[order], genomes[order]

    def fit(self, keys: jax.Array, genomes: np.ndarray, train: Split, validation: Split, key_train: jax.Array,
            steps: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Initializes, trains and evaluates members, `chunk_size` at a time, all chunks through the same
        compiled programs.

        Args:
            keys: one init key per member. genomes: int32[N, G] on the host.
            train, validation: splits placed with `replicate`. key_train: the shared batch and dropout key.
            steps: per member, a multiple of `config.steps_per_call`.
            chunk_size: members per chunk, e.g. from `chunk_size(budget)`.

        Returns:
            Validation accuracy [N], validation loss [N] and every train step's loss [N, steps], on the host.
        """
        num = len(genomes)
        chunk = self.padded_size(min(chunk_size, num))
        order, keys, genomes = self.arrange(keys, genomes, chunk)
        key_data, total = np.asarray(jax.random.key_data(keys)), len(genomes)
        key_train = self.replicate(key_train)

        def placed(part):
            return self.distribute(jax.random.wrap_key_data(key_data[part])), self.distribute(genomes[part])

        self.compile(*placed(slice(0, chunk)), train, key_train, validation)
        results = []
        for start in range(0, total, chunk):
            chunk_keys, chunk_genomes = placed(slice(start, start + chunk))
            states = self.init(chunk_keys, chunk_genomes)
            losses = []
            for call in range(steps // self.config.steps_per_call):
                start_step = self.replicate(np.int32(call * self.config.steps_per_call))
                states, call_losses = self.train(states, chunk_genomes, train, key_train, start_step)
                losses.append(call_losses)
            accuracy, loss = self.evaluate(states, chunk_genomes, validation)
            del states
            results.append((_to_host(accuracy), _to_host(loss), np.concatenate([_to_host(x) for x in losses], axis=1)))
        unordered = np.argsort(order)
        return tuple(np.concatenate(parts)[unordered][:num] for parts in zip(*results))

    def _apply(self, width, params, genome, tokens, dropout_key=None) -> jax.Array:
        """Float32 logits at `width`, computed in the configured dtype from the float32 stored weights."""
        params = jax.tree.map(lambda p: p.astype(self.config.compute_dtype), params)
        return self.model.apply_at_width(width, params, genome, tokens, tokens != 0, dropout_key).astype(jnp.float32)

    def _member_loss_and_grads(self, params, genome, tokens, labels, dropout_key):
        def at_width(width):
            def member_loss(params):
                return loss_fn(self._apply(width, params, genome, tokens, dropout_key), labels)

            return jax.value_and_grad(member_loss)(params)

        return self.model.at_width(genome, at_width)

    def _loss_and_grads(self, params: Params, genomes: jax.Array, tokens, labels, dropout_key):
        """Every member's loss and gradients on one shared batch (what `train` steps with)."""
        return self._map(lambda p, g: self._member_loss_and_grads(p, g, tokens, labels, dropout_key), params, genomes)

    def _train(self, states: MemberState, genomes: jax.Array, data: Split, key: jax.Array, start_step: jax.Array):
        """`steps_per_call` steps for every member. With one key, all members see the same batches and dropout
        masks, so their fitness differs by architecture only; with a key per member, each draws its own."""
        steps = start_step + jnp.arange(self.config.steps_per_call)
        keys = jnp.broadcast_to(key, genomes.shape[:1])

        def one(state, genome, key):
            key_data, key_dropout = jax.random.split(key)
            optimizers = self._optimizers(genome)
            optimizer_index = genome[self.space.index("optimizer")]

            def step(state, step_index):
                batch_key = jax.random.fold_in(key_data, step_index)
                rows = jax.random.randint(batch_key, (self.config.batch_size,), 0, data.labels.shape[0])
                loss, grads = self._member_loss_and_grads(state.params, genome, data.tokens[rows], data.labels[rows],
                                                          jax.random.fold_in(key_dropout, step_index))

                def update_with(index):
                    own_state = self.optimizer_state.read(index, state.opt_state)
                    updates, new = optimizers[index].update(grads, own_state, state.params)
                    return updates, self.optimizer_state.write(index, new, state.opt_state)

                branches = [functools.partial(update_with, i) for i in range(len(optimizers))]
                updates, opt_state = jax.lax.switch(optimizer_index, branches)
                return MemberState(optax.apply_updates(state.params, updates), opt_state), loss

            return jax.lax.scan(step, state, steps)

        return self._map(one, states, genomes, keys)

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
            def at_width(width):
                def batch(totals, xs):
                    tokens, labels, weights = xs
                    logits = self._apply(width, state.params, genome, tokens)
                    correct = jnp.sum(jnp.where(weights, logits.argmax(-1) == labels, 0))
                    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
                    return (totals[0] + correct, totals[1] + jnp.sum(jnp.where(weights, loss, 0))), None

                (correct, loss), _ = jax.lax.scan(batch, (0.0, 0.0), (tokens, labels, weights))
                return correct / count, loss / count

            return self.model.at_width(genome, at_width)

        return self._map(one, states, genomes)


def balanced_order(costs: np.ndarray, num_devices: int) -> np.ndarray:
    """An order of the members whose consecutive equal blocks (one per device) have about equal total cost:
    the costliest member first, each to the least loaded device that still has room."""
    per_device = len(costs) // num_devices
    blocks, loads = [[] for _ in range(num_devices)], np.zeros(num_devices)
    for member in np.argsort(-costs, kind="stable"):
        device = min((d for d in range(num_devices) if len(blocks[d]) < per_device), key=lambda d: loads[d])
        blocks[device].append(member)
        loads[device] += costs[member]
    return np.concatenate(blocks)


def pad_members(rows, total: int):
    """Repeats the last member up to `total` members (e.g. `padded_size`); padding members are computed and
    dropped. Host (numpy) rows stay on the host."""
    return rows[np.minimum(np.arange(total), len(rows) - 1)]


def _to_host(x: jax.Array) -> np.ndarray:
    """All of a member-sharded array on every process' host."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def memory_budget_bytes() -> int:
    """Half of what the local devices can hold: their memory on accelerators, the machine's RAM on CPU."""
    devices = jax.local_devices()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] * len(devices) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
