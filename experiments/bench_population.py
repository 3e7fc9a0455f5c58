"""Benchmark: training a population of genomes with evonas vs. a sequential per-genome loop.

Command:
    python experiments/bench_population.py --out experiments/results/bench_population.json
    python experiments/bench_population.py --out /tmp/bench.json --quick   # smoke run

Runtime on 2 shared CPU cores: ~10 minutes by default (16 under heavy load), ~1 minute with --quick.

What it measures. The same distinct random genomes (sampled with a fixed key) are trained
for the same number of steps, with the same batch size and ListOps batches, two ways:

  evonas           `Population.init` then `Population.train` (`steps_per_call` fused steps per
                   call) over all P members at once, members_per_vmap=1: one compiled program
                   for every genome, parameters stored at the largest size of the space.
  sequential_loop  what a user writes today: for each genome, decode `Architecture.from_genome`,
                   build the exact-size `TextClassifier`, `init` its parameters, build its optax
                   optimizer with `make_optimizer`, jit one train step (value_and_grad + update)
                   and call it once per step; one genome after the other.

Per configuration and method it reports `compile_seconds` (wall time of AOT
`.lower(...).compile()` of every program, tracing included), `member_steps_per_second` at steady
state (after compilation, over all but the first call, timed with `block_until_ready`),
`total_seconds` (wall time for all members' steps, compilation and initialisation included),
`useful_gflops` (sum over members of 3 x forward_flops x batch x steps / steady-state seconds;
3x counts the backward pass as twice the forward; only the exact-size architectures' matmuls
count, not padding or unused stored parameters) and `compilations` (evonas: `population.traces`;
loop: one per genome). It also measures the peak GFLOP/s of a large float32 matmul in the same
process, at the start and at the end of the run (the larger is reported: on a shared machine
either may be depressed), as the ceiling to read `useful_gflops` against. The JSON records the
load average and the md5 of every evonas module, since those modules change often.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import evonas  # first, before JAX starts its backend: it may set XLA:CPU flags
from evonas.data import TextTask, listops_task
from evonas.models import Architecture, PopulationModel, TextClassifier, count_params, forward_flops
from evonas.population import Population, Split, TrainConfig, loss_fn, make_optimizer
from evonas.space import Gene, SearchSpace, text_classifier_space

OPS_WITHOUT_IDENTITY = ("attention", "conv3", "conv5", "conv7", "gated_mlp", "gru", "lstm")
GENOME_SEED = 0  # the genomes every method trains
INIT_SEED = 1
TRAIN_SEED = 2
CLIP_NORM = 1.0  # TrainConfig's default, used by both methods


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One row pair of the table: a model size, a population size and a training budget."""

    name: str
    population_size: int
    steps: int  # training steps per member
    steps_per_call: int  # evonas only: steps fused into one `train` call
    batch_size: int
    space_kwargs: dict[str, Any]  # keyword arguments of text_classifier_space
    min_blocks: int = 1  # num_blocks choices start here (text_classifier_space starts at 1)

    def __post_init__(self):
        if self.steps % self.steps_per_call:
            raise ValueError(f"steps ({self.steps}) must be a multiple of steps_per_call ({self.steps_per_call})")
        if self.steps // self.steps_per_call < 2:
            raise ValueError("need at least two train calls: the first is not counted as steady state")

    def space(self) -> SearchSpace:
        return make_space(self.space_kwargs, self.min_blocks)


def make_space(space_kwargs: dict[str, Any], min_blocks: int = 1) -> SearchSpace:
    """`text_classifier_space(**space_kwargs)` with num_blocks restricted to min_blocks..max_blocks."""
    space = text_classifier_space(**space_kwargs)
    num_blocks = space.gene("num_blocks")
    restricted = Gene("num_blocks", tuple(n for n in num_blocks.choices if n >= min_blocks))
    return SearchSpace(tuple(restricted if gene.name == "num_blocks" else gene for gene in space.genes))


TINY_SPACE = {"widths": (16, 32), "max_blocks": 2, "ops": OPS_WITHOUT_IDENTITY}
MID_SPACE = {"widths": (64, 96, 128), "max_blocks": 3, "ops": OPS_WITHOUT_IDENTITY}


def get_configs(quick: bool = False) -> list[BenchConfig]:
    """The default grid (tiny and mid models, P = 8 and 32), or a one-row smoke grid."""
    if quick:
        return [BenchConfig("tiny", 4, steps=10, steps_per_call=5, batch_size=16, space_kwargs=TINY_SPACE)]
    configs = []
    for population_size in (8, 32):
        configs.append(BenchConfig("tiny", population_size, steps=100, steps_per_call=25, batch_size=16,
                                   space_kwargs=TINY_SPACE))
    for population_size in (8, 32):
        configs.append(BenchConfig("mid", population_size, steps=10, steps_per_call=2, batch_size=32,
                                   space_kwargs=MID_SPACE, min_blocks=2))
    return configs


def distinct_genomes(space: SearchSpace, key: jax.Array, num: int) -> np.ndarray:
    """`num` uniform genomes with distinct architectures, int32[num, num_genes], fixed for a fixed key.

    Distinct by decoded `Architecture`, not by raw genes: genes of unused block slots do not count.
    """
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


def train_flops_per_step(archs: Sequence[Architecture], task: TextTask, batch_size: int) -> float:
    """Matmul FLOPs of one train step of every architecture: 3 x forward (backward ~ 2 x forward)."""
    return float(sum(3 * forward_flops(arch, task.max_length, task.num_classes) * batch_size for arch in archs))


def to_device(task: TextTask) -> Split:
    return Split(jnp.asarray(task.train.tokens), jnp.asarray(task.train.labels))


def bench_evonas(config: BenchConfig, task: TextTask, genomes: np.ndarray) -> dict[str, Any]:
    """Trains every genome at once with `Population`; compile times from AOT lower+compile."""
    start = time.perf_counter()
    space = config.space()
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, TrainConfig(batch_size=config.batch_size, steps_per_call=config.steps_per_call))
    train = to_device(task)
    genomes = jnp.asarray(genomes)
    keys = jax.random.split(jax.random.key(INIT_SEED), len(genomes))
    key_train = jax.random.key(TRAIN_SEED)

    compile_start = time.perf_counter()
    population.init.lower(keys, genomes).compile()
    init_compile = time.perf_counter() - compile_start
    init_start = time.perf_counter()
    states = jax.block_until_ready(population.init(keys, genomes))  # reuses the executable compiled above
    init_seconds = time.perf_counter() - init_start

    compile_start = time.perf_counter()
    population.train.lower(states, genomes, train, key_train, jnp.int32(0)).compile()
    train_compile = time.perf_counter() - compile_start

    call_seconds, losses = [], []
    for call in range(config.steps // config.steps_per_call):
        call_start = time.perf_counter()
        step0 = jnp.int32(call * config.steps_per_call)
        states, call_losses = population.train(states, genomes, train, key_train, step0)
        call_losses.block_until_ready()
        call_seconds.append(time.perf_counter() - call_start)
        losses.append(np.asarray(call_losses))
    total = time.perf_counter() - start

    archs = [Architecture.from_genome(space, g) for g in np.asarray(genomes)]
    steady_seconds = sum(call_seconds[1:])
    steady_steps = config.steps_per_call * (len(call_seconds) - 1)
    final_losses = np.concatenate(losses, axis=1)[:, -1]
    return {
        "compile_seconds": init_compile + train_compile,
        "compile_seconds_init": init_compile,
        "compile_seconds_train": train_compile,
        "compile_method": "AOT .lower().compile() wall time (includes tracing)",
        "init_seconds": init_seconds,
        "first_call_seconds": call_seconds[0],
        "call_seconds": call_seconds,
        "member_steps_per_second": len(genomes) * steady_steps / steady_seconds,
        "total_seconds": total,
        "useful_gflops": train_flops_per_step(archs, task, config.batch_size) * steady_steps / steady_seconds / 1e9,
        "useful_gflops_including_compile": train_flops_per_step(archs, task, config.batch_size) * config.steps
        / total / 1e9,
        "compilations": population.traces,
        "stored_params_per_member": count_params(model.stored_shapes),
        "mean_final_loss": float(np.mean(final_losses[np.isfinite(final_losses)])),
        "diverged": int(np.sum(~np.isfinite(final_losses))),
    }


def make_train_step(module: TextClassifier, optimizer: optax.GradientTransformation, batch_size: int):
    """One plain train step of one standalone model, drawing the same batches and dropout keys as evonas."""

    def train_step(params, opt_state, tokens, labels, key_data, key_dropout, step):
        rows = jax.random.randint(jax.random.fold_in(key_data, step), (batch_size,), 0, labels.shape[0])
        batch_tokens, batch_labels = tokens[rows], labels[rows]

        def loss_of(params):
            dropout_key = jax.random.fold_in(key_dropout, step)
            logits = module.apply({"params": params}, batch_tokens, batch_tokens != 0, dropout_key)
            return loss_fn(logits, batch_labels)

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def bench_sequential_loop(config: BenchConfig, task: TextTask, genomes: np.ndarray) -> dict[str, Any]:
    """Trains one exact-size standalone model per genome, one after the other, one jitted call per step."""
    start = time.perf_counter()
    space = config.space()
    train = to_device(task)
    key_data, key_dropout = jax.random.split(jax.random.key(TRAIN_SEED))  # as Population.train splits its key
    example_tokens = train.tokens[:1]
    compile_seconds = init_seconds = steady_seconds = 0.0
    first_step_seconds, final_losses, archs, params_counts = [], [], [], []
    for index, genome in enumerate(genomes):
        arch = Architecture.from_genome(space, genome)
        archs.append(arch)
        module = TextClassifier(arch, task.vocab_size, task.max_length, task.num_classes)
        init_start = time.perf_counter()
        params = module.init(jax.random.fold_in(jax.random.key(INIT_SEED), index), example_tokens,
                             example_tokens != 0)["params"]
        optimizer = make_optimizer(arch.optimizer, arch.learning_rate, arch.weight_decay, clip_norm=CLIP_NORM)
        opt_state = optimizer.init(params)
        jax.block_until_ready((params, opt_state))
        init_seconds += time.perf_counter() - init_start
        params_counts.append(count_params(params))

        step_fn = jax.jit(make_train_step(module, optimizer, config.batch_size), donate_argnums=(0, 1))
        args = (train.tokens, train.labels, key_data, key_dropout)
        compile_start = time.perf_counter()
        step_fn.lower(params, opt_state, *args, jnp.int32(0)).compile()
        compile_seconds += time.perf_counter() - compile_start

        step_start = time.perf_counter()
        params, opt_state, loss = step_fn(params, opt_state, *args, jnp.int32(0))
        loss.block_until_ready()
        first_step_seconds.append(time.perf_counter() - step_start)
        steady_start = time.perf_counter()
        for step in range(1, config.steps):
            params, opt_state, loss = step_fn(params, opt_state, *args, jnp.int32(step))
        loss.block_until_ready()
        steady_seconds += time.perf_counter() - steady_start
        final_losses.append(float(loss))
        if step_fn._cache_size() != 1:  # the AOT compile above must be the only one
            raise RuntimeError(f"the train step of genome {index} compiled {step_fn._cache_size()} times")
        del params, opt_state
    total = time.perf_counter() - start

    steady_steps = config.steps - 1
    final_losses = np.asarray(final_losses)
    return {
        "compile_seconds": compile_seconds,
        "compile_method": "AOT .lower().compile() wall time (includes tracing), summed over genomes",
        "init_seconds": init_seconds,
        "first_step_seconds": float(np.sum(first_step_seconds)),
        "member_steps_per_second": len(genomes) * steady_steps / steady_seconds,
        "total_seconds": total,
        "useful_gflops": train_flops_per_step(archs, task, config.batch_size) * steady_steps / steady_seconds / 1e9,
        "useful_gflops_including_compile": train_flops_per_step(archs, task, config.batch_size) * config.steps
        / total / 1e9,
        "compilations": len(genomes),
        "mean_params_per_member": float(np.mean(params_counts)),
        "mean_final_loss": float(np.mean(final_losses[np.isfinite(final_losses)])),
        "diverged": int(np.sum(~np.isfinite(final_losses))),
    }


def run_benchmark(configs: Sequence[BenchConfig], log=print) -> dict[str, Any]:
    """Runs every config with both methods on shared genomes; returns the JSON-ready results."""
    start = time.perf_counter()
    load_start, sources = os.getloadavg(), source_hashes()
    peak_start = peak_matmul_gflops()
    log(f"peak float32 matmul: {peak_start:.1f} GFLOP/s")
    task = listops_task(seed=0)
    results = []
    for config in configs:
        space = config.space()
        # Smaller populations take the first genomes of the largest one of the same model size.
        largest = max(c.population_size for c in configs if c.space_kwargs == config.space_kwargs
                      and c.min_blocks == config.min_blocks)
        genomes = distinct_genomes(space, jax.random.key(GENOME_SEED), largest)[: config.population_size]
        archs = [Architecture.from_genome(space, g) for g in genomes]
        log(f"[{config.name} P={config.population_size}] evonas ...")
        evonas_result = bench_evonas(config, task, genomes)
        log(f"[{config.name} P={config.population_size}] sequential loop ...")
        loop_result = bench_sequential_loop(config, task, genomes)
        results.append({
            "name": config.name,
            "population": config.population_size,
            "steps": config.steps,
            "steps_per_call": config.steps_per_call,
            "batch_size": config.batch_size,
            "length": task.max_length,
            "space": {**{k: list(v) if isinstance(v, tuple) else v for k, v in config.space_kwargs.items()},
                      "num_blocks": list(space.gene("num_blocks").choices)},
            "mean_forward_mflops_per_sequence": float(np.mean(
                [forward_flops(a, task.max_length, task.num_classes) for a in archs])) / 1e6,
            "evonas": evonas_result,
            "sequential_loop": loop_result,
        })
        log(format_table(results[-1:]))
    peak_end = peak_matmul_gflops()  # again at the end: on a shared machine either one may be depressed
    return {
        "peak_matmul_gflops": max(peak_start, peak_end),
        "peak_matmul_gflops_start_end": [peak_start, peak_end],
        "configs": results,
        "allocator": os.environ.get("LD_PRELOAD") or "glibc default",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg()},
        "source_md5": sources,  # the evonas modules change often; this names the measured version
        "source_changed_during_run": source_hashes() != sources,
        "wall_seconds": time.perf_counter() - start,
    }


def source_hashes() -> dict[str, str]:
    """md5 of every evonas module file, so a result names the code it measured."""
    package = Path(evonas.__file__).parent
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(package.glob("*.py"))}


def format_table(configs: Sequence[dict[str, Any]], peak: float | None = None) -> str:
    """A fixed-width text table, one row per config and method."""
    header = (f"{'config':<6} {'P':>3} {'steps':>5} {'method':<16} {'compile s':>9} {'member-steps/s':>14} "
              f"{'total s':>8} {'useful GFLOP/s':>14}{' (% peak)' if peak else ''} {'compiles':>8}")
    lines = [header, "-" * len(header)]
    for row in configs:
        for method in ("evonas", "sequential_loop"):
            r = row[method]
            share = f" {100 * r['useful_gflops'] / peak:7.1f}%" if peak else ""
            lines.append(f"{row['name']:<6} {row['population']:>3} {row['steps']:>5} {method:<16} "
                         f"{r['compile_seconds']:>9.1f} {r['member_steps_per_second']:>14.1f} "
                         f"{r['total_seconds']:>8.1f} {r['useful_gflops']:>14.2f}{share} {r['compilations']:>8}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="one small config: a ~2-minute smoke run")
    args = parser.parse_args(argv)
    results = run_benchmark(get_configs(args.quick), log=lambda text: print(text, flush=True))
    print(f"\npeak float32 matmul {results['peak_matmul_gflops']:.1f} GFLOP/s; allocator: {results['allocator']}")
    print(format_table(results["configs"], results["peak_matmul_gflops"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
