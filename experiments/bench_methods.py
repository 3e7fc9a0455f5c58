"""Benchmark: a population trained by evonas against training the same architectures one at a time.

Command:
    python experiments/bench_population.py --out experiments/results/bench_population.json   # ~30 min
    python experiments/bench_population.py --out /tmp/bench.json --quick   # CI smoke run, < 2 min
    python experiments/bench_population.py --out F.json --repeats 3   # each method 3 times: ~1 h

On a shared machine one run of a method can be 15% slower than the next (experiments/README.md):
`--repeats N` runs every method N times, in rounds (each round runs the methods in order, evonas with an
empty compilation cache of its own), and reports each method's run with the median total time, with every
run's total and steady-state figures in `runs`.

The same distinct random genomes (fixed key) are trained for the same number of steps, with
the same batch size and ListOps data (length 64, 10 classes), five ways, each in a process of
its own (so that each one's peak memory is its own and no method warms another's caches):

  evonas            `Population.init` then `Population.train` over all P members
                    (`steps_per_call` fused steps per call, members_per_vmap=1), members split
                    over one CPU device per core (`evonas.cpu_devices`), placed as `fit` places
                    them (`Population.placement`): one program compiled
                    for every genome, with JAX's persistent compilation cache empty
                    (a user's first search over this space and shapes).
  evonas_cached     the same again in a new process, its programs now in the persistent cache
                    that the evonas run filled, as `evonas search` keeps one: a second search,
                    a resumed one or another seed of an ablation. The loops get no such row:
                    a search's new architectures are never in a cache.
  natural_loop      what a user writes: per genome, the exact-size `TextClassifier`, eager
                    Flax `init`, the genome's optax optimizer, one jitted train step called
                    once per step; one genome after the other, one compilation each.
  scan_loop         the strong loop: the same, but one jitted `lax.scan` of `steps_per_call`
                    steps per call.
  torch_loop        the peer, as NNI or NASLib train candidates: the same architectures in
                    PyTorch (`torch_models.py`), eager, 2 threads, one after the other, in a
                    process with the default allocator. Skipped (null) without torch.
  torch_loop_same_allocator
                    the same under evonas's allocator setting (`evonas.allocator`), given to
                    the process as the equivalent glibc environment variables.

Every JAX method imports evonas and so runs under its allocator setting (the JSON's
`allocator`). Per config and method (`M`): `total_seconds` (first line to last step,
compilation and initialisation included), `compile_seconds` (AOT `.lower().compile()` wall
time, tracing included; summed over genomes for the loops; 0 for torch), `member_steps_per_second`
(steady state: every member's steps after its first call), `useful_gflops` (steady-state
GFLOP/s of the exact-size architectures' matmuls: 3 x forward, backward ~ 2 x forward),
`executed_gflops` (the matmuls the program runs, recomputation included, see
`executed_flops.py`; equal to useful for the loops), `compilations` and `peak_memory_bytes`
(the process's peak resident set, so it includes the runtime's own ~0.3-0.5 GB;
`memory_before_method_bytes` is the peak before the method started). The peak GFLOP/s of a
2048^2 float32 matmul is measured at the start and the end (the larger is reported). The JSON
also holds the load average and the md5 of every evonas module, since those change often.
"""

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from executed_flops import member_step_flops
from peak_memory import peak_rss_bytes

import evonas  # sets the allocator (evonas.allocator) before JAX allocates
from evonas.allocator import GLIBC_ENVIRONMENT
from evonas.data import listops_task
from evonas.member import Split, TrainConfig, loss_fn, make_optimizer
from evonas.models import Architecture, TextClassifier, count_params, forward_flops
from evonas.population import Population
from evonas.space import Gene, SearchSpace, text_classifier_space
from evonas.supernet import PopulationModel

HERE = Path(__file__).resolve().parent
METHODS = ("evonas", "evonas_cached", "natural_loop", "scan_loop", "torch_loop", "torch_loop_same_allocator")
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


def get_configs(quick: bool = False) -> list[BenchConfig]:
    """The issue's tiny set (64 genomes x 200 steps) and a mid set of 32 x 50 steps, or a smoke run."""
    if quick:
        return [BenchConfig("tiny", 3, steps=10, steps_per_call=5, batch_size=16, space_kwargs=TINY_SPACE)]
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

    @property
    def max_length(self) -> int:
        return self.train.tokens.shape[1]


def bench_evonas(work: Work) -> dict[str, Any]:
    """Every genome at once with `Population`; also the host's time between train calls."""
    start = time.perf_counter()
    config = work.config
    model = PopulationModel(config.space(), work.vocab_size, work.max_length, work.num_classes)
    population = Population(model, TrainConfig(batch_size=config.batch_size, steps_per_call=config.steps_per_call))
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
    train = programs["train"]

    call_seconds, host_seconds, losses = [], [], []
    ready = time.perf_counter()
    for call in range(config.steps // config.steps_per_call):
        call_start = time.perf_counter()
        host_seconds.append(call_start - ready)  # the host's work since the last call's results were in
        states, call_losses = train(states, genomes, work.train, key_train, jnp.int32(call * config.steps_per_call),
                                    routes)
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
    for index, genome in enumerate(work.genomes):
        arch = Architecture.from_genome(space, genome)
        module = TextClassifier(arch, work.vocab_size, work.max_length, work.num_classes)
        init_start = time.perf_counter()
        params = module.init(jax.random.fold_in(jax.random.key(INIT_SEED), index), example, example != 0)["params"]
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
                spec["num_classes"])
    memory_before = peak_rss_bytes()
    if method.startswith("evonas"):
        result = bench_evonas(work)
    else:
        result = bench_loop(work, 1 if method == "natural_loop" else work.config.steps_per_call)
    result |= {"peak_memory_bytes": peak_rss_bytes(), "memory_before_method_bytes": memory_before,
               "allocator": evonas.ALLOCATOR}
    result_path.write_text(json.dumps(result))


# ---- the parent: configs, child processes, derived figures ----------------------------------


def run_method(method: str, spec_path: Path, log, repeat: int = 0) -> dict[str, Any] | None:
    """Runs one method in a fresh process; None (with a message) for torch methods without torch. Each
    `repeat` has its own compilation cache, so its evonas run compiles cold and its evonas_cached run reads
    what that one wrote."""
    result_path = spec_path.with_name(f"{method}.json")
    env = dict(os.environ)
    if method.startswith("torch"):
        if importlib.util.find_spec("torch") is None:
            log(f"  {method}: skipped, torch is not installed (pip install -e '.[bench]')")
            return None
        command = [sys.executable, str(HERE / "torch_models.py"), str(spec_path), str(result_path)]
        # libgomp's spin-waiting made 2-thread torch 6-12x slower on this shared machine under load (README).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if method == "torch_loop_same_allocator":
            env |= GLIBC_ENVIRONMENT
    else:
        command = [sys.executable, __file__, "--child", method, "--spec", str(spec_path), "--result", str(result_path)]
        if method.startswith("evonas"):  # evonas fills the cache, evonas_cached reads it
            env["JAX_COMPILATION_CACHE_DIR"] = str(spec_path.parent / f"compilation_cache_{repeat}")
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    result = json.loads(result_path.read_text())
    log(f"  {method}: {time.perf_counter() - start:.0f} s in its process")
    return result


def figures(raw: dict[str, Any] | None, useful_flops: float, executed_flops: float, population: int) -> dict | None:
    """The JSON's `M` for one method: raw timings plus rates; flops are per step summed over members."""
    if raw is None:
        return None
    def member_steps_per_second(run):
        return population * run["steady_steps_per_member"] / run["steady_seconds"]

    steady_steps, seconds = raw["steady_steps_per_member"], raw["steady_seconds"]
    return {
        "total_seconds": raw["total_seconds"],
        "compile_seconds": raw["compile_seconds"],
        "member_steps_per_second": member_steps_per_second(raw),
        "useful_gflops": useful_flops * steady_steps / seconds / 1e9,
        "executed_gflops": executed_flops * steady_steps / seconds / 1e9,
        "compilations": raw["compilations"],
        "peak_memory_bytes": raw["peak_memory_bytes"],
        **{k: v for k, v in raw.items() if k not in ("total_seconds", "compile_seconds", "compilations",
                                                        "peak_memory_bytes", "runs")},
        "runs": [{"total_seconds": run["total_seconds"], "compile_seconds": run["compile_seconds"],
                  "member_steps_per_second": member_steps_per_second(run)} for run in raw["runs"]],
    }


def evonas_step_flops(config: BenchConfig, genomes: np.ndarray, vocab_size: int, length: int,
                      num_classes: int) -> float:
    """Matmul FLOPs one population train step asks for, summed over members (see executed_flops.py)."""
    model = PopulationModel(config.space(), vocab_size, length, num_classes)
    population = Population(model, TrainConfig(batch_size=config.batch_size))
    tokens = jax.ShapeDtypeStruct((config.batch_size, length), jnp.int32)
    labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
    genome_shape = jax.ShapeDtypeStruct(genomes.shape[1:], jnp.int32)
    key = jax.random.key(0)
    closed = jax.make_jaxpr(population.steps._member_loss_and_grads)(model.stored_shapes, genome_shape, tokens, labels, key)
    params = jax.tree.leaves(model.stored_shapes)
    return sum(member_step_flops(closed, [*params, genome, tokens, labels, key]) for genome in genomes)


def median_run(raws: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run with the median total time (the faster middle one of an even count), with every run in `runs`
    (`figures` keeps their totals and steady state); None for a method that did not run."""
    if not raws:
        return None
    ordered = sorted(raws, key=lambda raw: raw["total_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": raws}


def run_config(config: BenchConfig, task, workdir: Path, log, repeats: int = 1) -> dict[str, Any]:
    space = config.space()
    genomes = distinct_genomes(space, jax.random.key(GENOME_SEED), config.population_size)
    archs = [Architecture.from_genome(space, g) for g in genomes]
    data_path = workdir / "train.npz"
    if not data_path.exists():
        np.savez(data_path, tokens=task.train.tokens, labels=task.train.labels)
    spec_path = workdir / config.name / "spec.json"
    spec_path.parent.mkdir()
    spec_path.write_text(json.dumps({
        "config": dataclasses.asdict(config), "genomes": genomes.tolist(), "archs": [a.to_dict() for a in archs],
        "data": str(data_path), "vocab_size": task.vocab_size, "num_classes": task.num_classes}))
    length = task.max_length
    useful = float(sum(3 * forward_flops(a, length, task.num_classes) * config.batch_size for a in archs))
    flops_start = time.perf_counter()
    executed = evonas_step_flops(config, genomes, task.vocab_size, length, task.num_classes)
    log(f"[{config.name} P={config.population_size}] executed/useful matmul FLOPs of evonas: {executed / useful:.3f}"
        f" (counted in {time.perf_counter() - flops_start:.0f} s)")
    row = {"name": config.name, "population": config.population_size, "steps": config.steps,
           "steps_per_call": config.steps_per_call, "batch_size": config.batch_size, "length": length,
           "space": {**{k: list(v) if isinstance(v, tuple) else v for k, v in config.space_kwargs.items()},
                     "num_blocks": list(space.gene("num_blocks").choices)},
           "mean_forward_mflops_per_sequence": float(np.mean([forward_flops(a, length, task.num_classes)
                                                              for a in archs])) / 1e6,
           "useful_over_executed_evonas": useful / executed}
    raws = {method: [] for method in METHODS}
    for repeat in range(repeats):
        for method in METHODS:
            log(f"[{config.name} P={config.population_size}] {method}{f' (run {repeat + 1} of {repeats})' if repeats > 1 else ''} ...")
            raw = run_method(method, spec_path, log, repeat)
            raws[method] += [] if raw is None else [raw]
    for method in METHODS:
        flops = executed if method.startswith("evonas") else useful
        row[method] = figures(median_run(raws[method]), useful, flops, config.population_size)
    return row


def run_benchmark(configs: Sequence[BenchConfig], log=print, repeats: int = 1) -> dict[str, Any]:
    """Every config with every method on shared genomes; returns the JSON-ready results."""
    start = time.perf_counter()
    load_start, sources = os.getloadavg(), source_hashes()
    peak_start = peak_matmul_gflops()
    log(f"peak float32 matmul: {peak_start:.1f} GFLOP/s; allocator: {evonas.ALLOCATOR}; load {load_start}")
    task = listops_task(seed=0)
    with tempfile.TemporaryDirectory() as workdir:
        rows = []
        for config in configs:
            rows.append(run_config(config, task, Path(workdir), log, repeats))
            log(format_table(rows[-1:]))
    peak_end = peak_matmul_gflops()  # again at the end: on a shared machine either one may be depressed
    return {
        "peak_matmul_gflops": max(peak_start, peak_end),
        "peak_matmul_gflops_start_end": [peak_start, peak_end],
        "configs": rows,
        "repeats": repeats,  # runs per method; each M is its run with the median total time
        "allocator": evonas.ALLOCATOR,
        "allocator_by_method": {"evonas": "allocator", "evonas_cached": "allocator", "natural_loop": "allocator",
                                "scan_loop": "allocator",
                                "torch_loop": "glibc default",
                                "torch_loop_same_allocator": "allocator, as glibc environment variables"},
        "torch_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "machine": {"cpu_count": os.cpu_count(), "jax_devices": jax.device_count(), "platform": platform.platform(),
                    "jax": jax.__version__,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "source_md5": sources,  # the evonas modules change often; this names the measured version
        "source_changed_during_run": source_hashes() != sources,
        "wall_seconds": time.perf_counter() - start,
    }


def source_hashes() -> dict[str, str]:
    """md5 of every evonas module and of this benchmark's files, so a result names the code it measured."""
    files = sorted(Path(evonas.__file__).parent.glob("*.py")) + sorted(HERE.glob("*.py"))
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in files}


def format_table(rows: Sequence[dict[str, Any]], peak: float | None = None) -> str:
    """A fixed-width text table, one line per config and method."""
    header = (f"{'config':<6} {'P':>3} {'steps':>5} {'method':<25} {'total s':>8} {'compile s':>9} "
              f"{'member-steps/s':>14} {'useful GFLOP/s':>14}{' (% peak)' if peak else ''} {'exec GFLOP/s':>12} "
              f"{'compiles':>8} {'peak MB':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        for method in METHODS:
            r = row[method]
            if r is None:
                lines.append(f"{row['name']:<6} {row['population']:>3} {row['steps']:>5} {method:<25} skipped")
                continue
            share = f" {100 * r['useful_gflops'] / peak:7.1f}%" if peak else ""
            lines.append(f"{row['name']:<6} {row['population']:>3} {row['steps']:>5} {method:<25} "
                         f"{r['total_seconds']:>8.1f} {r['compile_seconds']:>9.1f} {r['member_steps_per_second']:>14.1f}"
                         f" {r['useful_gflops']:>14.2f}{share} {r['executed_gflops']:>12.2f} {r['compilations']:>8}"
                         f" {r['peak_memory_bytes'] / 2**20:>8.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="one small config: a ~2-minute smoke run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per method; each method reports its run with the median total time")
    parser.add_argument("--child", choices=("evonas", "evonas_cached", "natural_loop", "scan_loop"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.spec, args.result)
        return None
    if not args.out:
        parser.error("--out is required")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    results = run_benchmark(get_configs(args.quick), log=lambda text: print(text, flush=True), repeats=args.repeats)
    print(f"\npeak float32 matmul {results['peak_matmul_gflops']:.1f} GFLOP/s; allocator: {results['allocator']}")
    print(format_table(results["configs"], results["peak_matmul_gflops"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
