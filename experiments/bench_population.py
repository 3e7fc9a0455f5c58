"""Benchmark: a population trained by evonas against training the same architectures one at a time.

Command:
    python experiments/bench_population.py --out experiments/results/bench_population.json   # ~30 min
    python experiments/bench_population.py --out /tmp/bench.json --quick   # CI smoke run, < 2 min
    python experiments/bench_population.py --out F.json --repeats 3   # each method 3 times: ~1 h
    python experiments/bench_population.py --search --out F.json [--quick]   # whole searches (bench_search.py)
    python experiments/bench_population.py --accelerator --out F.json [--quick]   # GPU/TPU (bench_accelerator.py)

On a shared machine one run of a method can be 15% slower than the next (experiments/README.md):
`--repeats N` runs every method N times, in rounds (each round runs the methods in order, evonas with an
empty compilation cache of its own), and reports each method's run with the median total time, with every
run's total and steady-state figures in `runs`.

The same distinct random genomes (fixed key) are trained for the same number of steps, with the same batch
size and ListOps data (length 64, 10 classes), by every method of `bench_methods.METHODS`, one method after
the other, each in processes of its own (so that no method warms another's caches):

  evonas            `Population` over all P members in one process, one JAX CPU device per core
                    (`evonas.cpu_devices`), placed as `fit` places them: one program compiled for every
                    genome, with JAX's persistent compilation cache empty (a user's first search).
  evonas_cached     the same again in a new process, its programs now in the persistent cache that the
                    evonas run filled, as `evonas search` keeps one (a second search, a resumed one).
  natural_loop      what a user writes: per genome, the exact-size `TextClassifier`, the genome's optax
                    optimizer, one jitted train step called once per step; one process per core, pinned,
                    1 thread, genomes split interleaved; one compilation per genome.
  scan_loop         the strong loop: the same with one jitted `lax.scan` of `steps_per_call` steps per call.
  torch_loop        the peer as users run trials (NNI's `trialConcurrency`): the same architectures in
                    PyTorch eager (`torch_models.py`), one process per core, pinned, 1 thread each.
  torch_loop_same_allocator   the same under evonas's allocator setting, as glibc environment variables.
  torch_loop_2_threads        the earlier peer: one process, 2 threads, one genome after the other.

Per config and method (`M`): `total_seconds` is the wall time from launching the method's first process
to the exit of its last (interpreter start and imports included, for every method alike);
`in_process_seconds` the slowest process's own first-line-to-last-step time; `compile_seconds` summed over
processes (AOT `.lower().compile()` wall time; 0 for torch); `member_steps_per_second` the steady state
(every member's steps after its first call), summed over processes; `useful_gflops` the same for the
exact-size architectures' matmuls (3 x forward per step); `executed_gflops` the matmuls evonas's program
runs (`executed_flops.py`; equal to useful for the loops); `compilations`; `peak_memory_bytes` summed over
the method's processes (each its peak resident set); `workers` every process's own figures. `allocators`
names each row's malloc setting. The JSON also holds the load average and the md5 of every source module.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from bench_methods import (
    GENOME_SEED,
    HERE,
    METHODS,
    BenchConfig,
    distinct_genomes,
    get_configs,
    peak_matmul_gflops,
    run_method,
    worker_cores,
)
from executed_flops import member_step_flops

import evonas
from evonas.data import listops_task
from evonas.member import TrainConfig
from evonas.models import Architecture, forward_flops
from evonas.population import Population
from evonas.supernet import PopulationModel


def figures(raw: dict[str, Any] | None, genome_flops: np.ndarray, executed_flops: float | None) -> dict | None:
    """The JSON's `M` for one method from its processes' results; `genome_flops` are each genome's useful
    matmul FLOPs per step, `executed_flops` evonas's per population step (None: the loops, executed = useful)."""
    if raw is None:
        return None
    workers = raw["workers"]

    def rates(run):
        steps = [w["steady_steps_per_member"] / w["steady_seconds"] for w in run["workers"]]
        return (sum(len(w["indices"]) * s for w, s in zip(run["workers"], steps)),
                sum(genome_flops[w["indices"]].sum() * s for w, s in zip(run["workers"], steps)))

    member_steps, useful = rates(raw)
    if executed_flops is not None:
        (only,) = workers
        executed = executed_flops * only["steady_steps_per_member"] / only["steady_seconds"]
    else:
        executed = useful
    counted = [(w["mean_final_loss"], len(w["indices"]) - w["diverged"]) for w in workers]
    result = {
        "total_seconds": raw["wall_seconds"],
        "in_process_seconds": max(w["total_seconds"] for w in workers),
        "compile_seconds": sum(w["compile_seconds"] for w in workers),
        "member_steps_per_second": member_steps,
        "useful_gflops": useful / 1e9,
        "executed_gflops": executed / 1e9,
        "compilations": sum(w["compilations"] for w in workers),
        "peak_memory_bytes": sum(w["peak_memory_bytes"] for w in workers),
        "processes": len(workers),
        "allocator": raw["allocator"],
        "mean_final_loss": sum(loss * n for loss, n in counted) / max(1, sum(n for _, n in counted)),
        "diverged": sum(w["diverged"] for w in workers),
        "runs": [{"total_seconds": run["wall_seconds"], "member_steps_per_second": rates(run)[0],
                  "compile_seconds": sum(w["compile_seconds"] for w in run["workers"])} for run in raw["runs"]],
    }
    if len(workers) == 1:  # evonas's and the 2-thread peer's own figures (host_fraction, threads, ...)
        result |= {k: v for k, v in workers[0].items() if k not in result and k not in ("indices", "final_losses")}
    else:
        result["workers"] = [{"genomes": len(w["indices"]), "cpu_affinity": w.get("cpu_affinity"),
                              "in_process_seconds": w["total_seconds"], "compile_seconds": w["compile_seconds"],
                              "member_steps_per_second": len(w["indices"]) * w["steady_steps_per_member"]
                              / w["steady_seconds"]} for w in workers]
    return result


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
    """The run with the median wall time (the faster middle one of an even count), with every run in `runs`;
    None for a method that did not run."""
    if not raws:
        return None
    ordered = sorted(raws, key=lambda raw: raw["wall_seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": raws}


def run_config(config: BenchConfig, task, workdir: Path, log, repeats: int = 1) -> dict[str, Any]:
    space = config.space()
    genomes = distinct_genomes(space, jax.random.key(GENOME_SEED), config.population_size)
    archs = [Architecture.from_genome(space, g) for g in genomes]
    data_path = workdir / "train.npz"
    if not data_path.exists():
        np.savez(data_path, tokens=task.train.tokens, labels=task.train.labels)
    config_dir = workdir / config.name
    config_dir.mkdir()
    spec = {"config": config.__dict__, "genomes": genomes.tolist(), "archs": [a.to_dict() for a in archs],
            "data": str(data_path), "vocab_size": task.vocab_size, "num_classes": task.num_classes}
    length = task.max_length
    genome_flops = np.array([3 * forward_flops(a, length, task.num_classes) * config.batch_size for a in archs])
    useful = float(genome_flops.sum())
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
            log(f"[{config.name} P={config.population_size}] {method}"
                f"{f' (run {repeat + 1} of {repeats})' if repeats > 1 else ''} ...")
            env = dict(os.environ)
            if method.startswith("evonas"):  # evonas fills the cache, evonas_cached reads it
                env["JAX_COMPILATION_CACHE_DIR"] = str(config_dir / f"compilation_cache_{repeat}")
            raw = run_method(method, spec, config_dir, env)
            if raw is None:
                log(f"  {method}: skipped, torch is not installed (pip install -e '.[bench]')")
            else:
                log(f"  {method}: {raw['wall_seconds']:.0f} s, {len(raw['workers'])} process(es)")
                raws[method].append(raw)
    for method in METHODS:
        row[method] = figures(median_run(raws[method]), genome_flops, executed if method.startswith("evonas") else None)
    return row


def machine(load_start) -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "cores_used": worker_cores(), "jax_devices": jax.device_count(),
            "jax_backend": jax.default_backend(), "platform": platform.platform(), "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "loadavg_start": load_start, "loadavg_end": os.getloadavg()}


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
        "allocators": {name: method.allocator for name, method in METHODS.items()},
        "processes": {name: "one per core, pinned, 1 thread" if method.per_core else
                      ("one, 2 threads" if method.threads == 2 else "one, one JAX CPU device per core")
                      for name, method in METHODS.items()},
        "torch_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "machine": machine(load_start),
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
    header = (f"{'config':<6} {'P':>3} {'steps':>5} {'method':<25} {'procs':>5} {'total s':>8} {'compile s':>9} "
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
            lines.append(f"{row['name']:<6} {row['population']:>3} {row['steps']:>5} {method:<25} {r['processes']:>5} "
                         f"{r['total_seconds']:>8.1f} {r['compile_seconds']:>9.1f} {r['member_steps_per_second']:>14.1f}"
                         f" {r['useful_gflops']:>14.2f}{share} {r['executed_gflops']:>12.2f} {r['compilations']:>8}"
                         f" {r['peak_memory_bytes'] / 2**20:>8.0f}")
    return "\n".join(lines)


def write_json(path: str | Path, results: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def log_line(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the chosen mode")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per method; each method reports its run with the median total time")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--search", action="store_true", help="whole searches against the torch peer (bench_search.py)")
    mode.add_argument("--accelerator", action="store_true", help="the accelerator table (bench_accelerator.py)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="--accelerator: seconds for the whole run (default 450; phases past it are skipped)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.search:
        import bench_search

        return bench_search.main(args.out, args.quick, log_line)
    if args.accelerator:
        import bench_accelerator

        return bench_accelerator.main(args.out, args.quick, log_line, args.deadline)
    results = run_benchmark(get_configs(args.quick), log=log_line, repeats=args.repeats)
    print(f"\npeak float32 matmul {results['peak_matmul_gflops']:.1f} GFLOP/s; allocator: {results['allocator']}")
    print(format_table(results["configs"], results["peak_matmul_gflops"]))
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
