"""The population benchmark's methods, each run in processes of its own, and the launcher that runs them.

A method is one process (evonas: all cores, one JAX CPU device per core; the 2-thread torch peer) or one
process per core (the loops and the torch peer, as users run trials: NNI's `trialConcurrency`, or one shell
per core), each pinned to its core with 1 thread, the genomes split between them interleaved (worker w of
n trains genomes w, w + n, ...). `run_method` returns what every process of a method reported, with the
wall time from the first launch to the last exit. bench_population.py turns that into the table.

    python experiments/bench_methods.py METHOD SPEC RESULT   # one JAX process (bench_population.py starts it)
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from peak_memory import peak_rss_bytes

import evonas  # sets the allocator (evonas.allocator) before JAX allocates
from evonas.allocator import GLIBC_ENVIRONMENT
from evonas.member import Split, TrainConfig, loss_fn
from evonas.models import Architecture, TextClassifier, count_params
from evonas.optimizers import make_optimizer
from evonas.population import Population
from evonas.space import Gene, SearchSpace, text_classifier_space
from evonas.supernet import PopulationModel

HERE = Path(__file__).resolve().parent
OPS_WITHOUT_IDENTITY = ("attention", "conv3", "conv5", "conv7", "gated_mlp", "gru", "lstm")
GENOME_SEED = 0  # the genomes every method trains
INIT_SEED = 1
TRAIN_SEED = 2
CLIP_NORM = 1.0  # TrainConfig's default, used by every method


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One block of the table: a model size, a population and a training budget."""

    name: str
    population_size: int
    steps: int  # training steps per member
    steps_per_call: int  # evonas and scan_loop: steps fused into one call
    batch_size: int
    space_kwargs: dict[str, Any]  # keyword arguments of text_classifier_space
    min_blocks: int = 1  # num_blocks choices start here (text_classifier_space starts at 1)

    def __post_init__(self):
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps ({self.steps}) must be a multiple of steps_per_call ({self.steps_per_call})")
        if self.steps // self.steps_per_call < 2:
            raise ValueError("need at least two train calls: the first is not counted as steady state")

    def space(self) -> SearchSpace:
        """`text_classifier_space(**space_kwargs)` with num_blocks restricted to min_blocks and up."""
        space = text_classifier_space(**self.space_kwargs)
        num_blocks = Gene("num_blocks", tuple(n for n in space.gene("num_blocks").choices if n >= self.min_blocks))
        return SearchSpace(tuple(num_blocks if gene.name == "num_blocks" else gene for gene in space.genes))


TINY_SPACE = {"widths": (16, 32), "max_blocks": 2, "ops": OPS_WITHOUT_IDENTITY}
MID_SPACE = {"widths": (64, 96, 128), "max_blocks": 4, "ops": OPS_WITHOUT_IDENTITY}
# The smoke run checks what the benchmark writes, not speed: two ops in one block compile in seconds, not a minute.
SMOKE_SPACE = {"widths": (16,), "max_blocks": 1, "ops": ("attention", "conv3")}


def get_configs(quick: bool = False) -> list[BenchConfig]:
    """The issue's tiny set (64 genomes x 200 steps) and a mid set of 32 x 50 steps, or a smoke run."""
    if quick:
        return [BenchConfig("tiny", 3, steps=10, steps_per_call=5, batch_size=16, space_kwargs=SMOKE_SPACE)]
    return [
        BenchConfig("tiny", 64, steps=200, steps_per_call=50, batch_size=16, space_kwargs=TINY_SPACE),
        # 32 members: the input-speed figure is asked at P = 32; 50 steps: the search's default per child.
        BenchConfig("mid", 32, steps=50, steps_per_call=10, batch_size=32, space_kwargs=MID_SPACE, min_blocks=2),
    ]


def distinct_genomes(space: SearchSpace, key: jax.Array, num: int) -> np.ndarray:
    """`num` uniform genomes with distinct architectures (genes of unused block slots do not count)."""
    found: dict[Architecture, np.ndarray] = {}
    for attempt in range(100):
        for genome in np.asarray(space.sample(jax.random.fold_in(key, attempt), 4 * num)):
            found.setdefault(Architecture.from_genome(space, genome), genome)
        if len(found) >= num:
            return np.stack(list(found.values())[:num])
    raise ValueError(f"found only {len(found)} distinct architectures, asked for {num}")


def peak_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of one jitted float32 [size, size] @ [size, size] matmul."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ---- the methods, each run in a child process ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Work:
    """What a child process trains: a config, its genomes and the training split."""

    config: BenchConfig
    genomes: np.ndarray  # int32[P, num_genes]
    train: Split
    vocab_size: int
    num_classes: int
    indices: np.ndarray | None = None  # each genome's index in the whole set (its init key); None: 0, 1, ...
    compute_dtype: str = "float32"  # evonas's TrainConfig.compute_dtype

    @property
    def max_length(self) -> int:
        return self.train.tokens.shape[1]


def bench_evonas(work: Work) -> dict[str, Any]:
    """Every genome at once with `Population`; also the host's time between train calls."""
    start = time.perf_counter()
    config = work.config
    model = PopulationModel(config.space(), work.vocab_size, work.max_length, work.num_classes)
    population = Population(model, TrainConfig(batch_size=config.batch_size, steps_per_call=config.steps_per_call,
                                               compute_dtype=work.compute_dtype))
    num = len(work.genomes)
    # As `fit` arranges them: padding members (the last genome again) are trained, not counted.
    order, keys, genomes = population.arrange(jax.random.split(jax.random.key(INIT_SEED), num), work.genomes,
                                              population.padded_size(num))
    key_train = jax.random.key(TRAIN_SEED)

    compile_start = time.perf_counter()
    programs = population.compile(keys, genomes, work.train, key_train)  # init and train, side by side
    compile_seconds = time.perf_counter() - compile_start
    genomes, routes = population.distribute(genomes), population.distribute(population.routes(genomes))
    states = jax.block_until_ready(programs["init"](keys, genomes, routes))
    train, active = programs["train"], population.distribute(np.ones(len(genomes), bool))  # every member trains

    call_seconds, host_seconds, losses = [], [], []
    ready = time.perf_counter()
    for call in range(config.steps // config.steps_per_call):
        call_start = time.perf_counter()
        host_seconds.append(call_start - ready)  # the host's work since the last call's results were in
        states, call_losses = train(states, genomes, work.train, key_train, jnp.int32(call * config.steps_per_call),
                                    routes, active)
        call_losses.block_until_ready()
        ready = time.perf_counter()
        call_seconds.append(ready - call_start)
        losses.append(np.asarray(call_losses))  # a search reads the losses after every call
    total = time.perf_counter() - start
    memory = train.memory_analysis()
    final_losses = np.concatenate(losses, axis=1)[np.argsort(order)][:num, -1]
    return {
        "total_seconds": total,
        "compile_seconds": compile_seconds,
        "steady_seconds": sum(call_seconds[1:]),
        "steady_steps_per_member": config.steps_per_call * (len(call_seconds) - 1),
        "call_seconds": call_seconds,
        "host_seconds_between_calls": host_seconds[1:],
        "host_fraction": sum(host_seconds[1:]) / sum(call_seconds[1:]),
        "compilations": population.traces,
        "stored_params_per_member": count_params(model.stored_shapes),
        "train_program_temp_bytes": memory.temp_size_in_bytes if memory else None,
        **loss_summary(final_losses),
    }


def make_train_step(module: TextClassifier, optimizer: optax.GradientTransformation, batch_size: int):
    """One train step of one standalone model, drawing the same batches and dropout keys as evonas."""

    def train_step(params, opt_state, tokens, labels, key_data, key_dropout, step):
        rows = jax.random.randint(jax.random.fold_in(key_data, step), (batch_size,), 0, labels.shape[0])
        batch_tokens, batch_labels = tokens[rows], labels[rows]

        def loss_of(params):
            logits = module.apply({"params": params}, batch_tokens, batch_tokens != 0,
                                  jax.random.fold_in(key_dropout, step))
            return loss_fn(logits, batch_labels)

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def make_scan_step(module: TextClassifier, optimizer: optax.GradientTransformation, batch_size: int, steps: int):
    """`steps` train steps in one `lax.scan`: the strong loop's call."""
    train_step = make_train_step(module, optimizer, batch_size)

    def scan_step(params, opt_state, tokens, labels, key_data, key_dropout, step0):
        def body(carry, step):
            params, opt_state, loss = train_step(*carry, tokens, labels, key_data, key_dropout, step)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), step0 + jnp.arange(steps))
        return params, opt_state, losses[-1]

    return scan_step


def bench_loop(work: Work, steps_per_call: int) -> dict[str, Any]:
    """One exact-size model per genome, one after the other: one jitted call per `steps_per_call` steps."""
    start = time.perf_counter()
    config, space = work.config, work.config.space()
    key_data, key_dropout = jax.random.split(jax.random.key(TRAIN_SEED))  # as Population.train splits its key
    example = work.train.tokens[:1]
    compile_seconds = init_seconds = steady_seconds = 0.0
    final_losses = []
    indices = range(len(work.genomes)) if work.indices is None else work.indices
    for index, genome in zip(indices, work.genomes):
        arch = Architecture.from_genome(space, genome)
        module = TextClassifier(arch, work.vocab_size, work.max_length, work.num_classes)
        init_start = time.perf_counter()
        params = module.init(jax.random.fold_in(jax.random.key(INIT_SEED), int(index)), example, example != 0)["params"]
        optimizer = make_optimizer(arch.optimizer, arch.learning_rate, arch.weight_decay, clip_norm=CLIP_NORM)
        opt_state = jax.block_until_ready(optimizer.init(params))
        init_seconds += time.perf_counter() - init_start

        if steps_per_call == 1:
            step_fn = make_train_step(module, optimizer, config.batch_size)
        else:
            step_fn = make_scan_step(module, optimizer, config.batch_size, steps_per_call)
        args = (work.train.tokens, work.train.labels, key_data, key_dropout)
        compile_start = time.perf_counter()
        compiled = jax.jit(step_fn, donate_argnums=(0, 1)).lower(params, opt_state, *args, jnp.int32(0)).compile()
        compile_seconds += time.perf_counter() - compile_start

        params, opt_state, loss = compiled(params, opt_state, *args, jnp.int32(0))
        loss.block_until_ready()
        steady_start = time.perf_counter()
        for step in range(steps_per_call, config.steps, steps_per_call):
            params, opt_state, loss = compiled(params, opt_state, *args, jnp.int32(step))
        loss.block_until_ready()
        steady_seconds += time.perf_counter() - steady_start
        final_losses.append(float(loss))
        del params, opt_state
    return {
        "total_seconds": time.perf_counter() - start,
        "compile_seconds": compile_seconds,
        "init_seconds": init_seconds,
        "steady_seconds": steady_seconds,
        "steady_steps_per_member": config.steps - steps_per_call,
        "compilations": len(work.genomes),
        **loss_summary(np.asarray(final_losses)),
    }


def loss_summary(final_losses: np.ndarray) -> dict[str, Any]:
    finite = np.isfinite(final_losses)
    return {"mean_final_loss": float(np.mean(final_losses[finite])), "diverged": int(np.sum(~finite))}


def run_child(method: str, spec_path: Path, result_path: Path) -> None:
    """The body of a child process: one method on one config; writes its raw figures as JSON."""
    spec = json.loads(spec_path.read_text())
    data = np.load(spec["data"])
    work = Work(BenchConfig(**spec["config"]), np.asarray(spec["genomes"], np.int32),
                Split(jnp.asarray(data["tokens"]), jnp.asarray(data["labels"])), spec["vocab_size"],
                spec["num_classes"], np.asarray(spec["indices"]))
    memory_before = peak_rss_bytes()
    if method.startswith("evonas"):
        result = bench_evonas(work)
    else:
        result = bench_loop(work, 1 if method == "natural_loop" else work.config.steps_per_call)
    result |= {"peak_memory_bytes": peak_rss_bytes(), "memory_before_method_bytes": memory_before,
               "allocator": evonas.ALLOCATOR, "cpu_affinity": sorted(os.sched_getaffinity(0)),
               "jax_devices": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    result_path.write_text(json.dumps(result))


# ---- the launcher: one process, or one per core -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
    """How a method runs: its program, whether one process per core, threads per process, its allocator."""

    program: str  # "jax" (this file) or "torch" (torch_models.py)
    per_core: bool
    threads: int | None  # torch's intra-op threads; None for JAX (one device per core, or 1 thread per core)
    allocator: str  # for the JSON: which malloc settings the processes run under


METHODS = {
    "evonas": Method("jax", per_core=False, threads=None, allocator="evonas (mallopt, evonas.allocator)"),
    "evonas_cached": Method("jax", per_core=False, threads=None, allocator="evonas (mallopt, evonas.allocator)"),
    "natural_loop": Method("jax", per_core=True, threads=1, allocator="evonas (mallopt, evonas.allocator)"),
    "scan_loop": Method("jax", per_core=True, threads=1, allocator="evonas (mallopt, evonas.allocator)"),
    "torch_loop": Method("torch", per_core=True, threads=1, allocator="glibc default"),
    "torch_loop_same_allocator": Method("torch", per_core=True, threads=1,
                                        allocator="evonas's setting as glibc environment variables"),
    "torch_loop_2_threads": Method("torch", per_core=False, threads=2, allocator="glibc default"),
}
# One thread per JAX worker: one CPU device, Eigen single-threaded (jax 0.10.2 knows this flag; it has no
# intra_op_parallelism_threads, which XLA_FLAGS rejects), and the worker's affinity of one core, from which
# XLA sizes its thread pools.
ONE_THREAD_JAX_FLAG = "--xla_cpu_multi_thread_eigen=false"


def worker_cores() -> list[int]:
    """The cores this process may run on: one worker per core."""
    return sorted(os.sched_getaffinity(0))


def split_interleaved(num: int, num_workers: int) -> list[np.ndarray]:
    """Genome indices of each worker: worker w of n gets w, w + n, ... (similar sizes and mixes)."""
    return [np.arange(w, num, num_workers) for w in range(min(num_workers, num))]


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def run_method(name: str, spec: dict[str, Any], workdir: Path, env: dict[str, str] | None = None,
               cores: list[int] | None = None) -> dict[str, Any] | None:
    """Runs method `name` on `spec` (config, genomes, archs, data, ...) in its process(es); returns
    `{"wall_seconds", "workers": [{"indices", **result}]}`, or None for a torch method without torch."""
    method = METHODS[name]
    if method.program == "torch" and not has_torch():
        return None
    cores = worker_cores() if cores is None else cores
    groups = split_interleaved(len(spec["genomes"]), len(cores)) if method.per_core else [np.arange(len(spec["genomes"]))]
    env = dict(os.environ if env is None else env)
    if method.program == "torch":
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp's spin-waiting loses to other people's load (README)
        if name == "torch_loop_same_allocator":
            env |= GLIBC_ENVIRONMENT
    elif method.per_core:
        env |= {"JAX_NUM_CPU_DEVICES": "1", "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} {ONE_THREAD_JAX_FLAG}".strip()}
    commands, results = [], []
    for w, indices in enumerate(groups):
        worker_spec = {**spec, "indices": indices.tolist(), "genomes": [spec["genomes"][i] for i in indices],
                       "archs": [spec["archs"][i] for i in indices], "threads": method.threads}
        spec_path, result_path = workdir / f"{name}_{w}.spec.json", workdir / f"{name}_{w}.json"
        spec_path.write_text(json.dumps(worker_spec))
        program = HERE / ("torch_models.py" if method.program == "torch" else "bench_methods.py")
        commands.append([sys.executable, str(program), *([] if method.program == "torch" else [name]),
                         str(spec_path), str(result_path)])
        results.append(result_path)
    pins = [{core} for core in cores] if method.per_core else [None] * len(commands)
    wall = run_processes(commands, env, pins)
    return {"wall_seconds": wall, "per_core": method.per_core, "allocator": method.allocator,
            "workers": [{"indices": g.tolist(), **json.loads(r.read_text())} for g, r in zip(groups, results)]}


def pinned(command: list[str], cores: set[int]) -> list[str]:
    """`command` run on `cores` only: a small Python sets the affinity, then becomes the command (exec), so the
    command starts pinned (a `preexec_fn` is unsafe in a process with threads, as JAX's)."""
    setter = "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); " \
             "os.execv(sys.argv[2], sys.argv[2:])"
    return [sys.executable, "-c", setter, ",".join(map(str, sorted(cores))), *command]


def run_processes(commands: list[list[str]], env: dict[str, str], pins: list[set[int] | None]) -> float:
    """Starts every command at once (each pinned to its cores where given, before it starts); returns the
    seconds from the first launch to the last exit."""
    start = time.perf_counter()
    processes = [subprocess.Popen(command if pin is None else pinned(command, pin), env=env)
                 for command, pin in zip(commands, pins)]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - start
    if failed := [c for c, code in zip(commands, codes) if code]:
        raise RuntimeError(f"benchmark process failed: {' '.join(failed[0])}")
    return wall


if __name__ == "__main__":
    run_child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
