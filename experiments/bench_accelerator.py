"""The accelerator table: evonas's population against one architecture vmapped and the one-at-a-time loops.

    python experiments/bench_population.py --accelerator --out results.json   # one GPU: < 8 min (experiments/gpu_run.sh)
    python experiments/bench_population.py --accelerator --quick --out /tmp/acc.json   # tiny sizes, any backend

On whatever backend JAX finds, for the mid set of the population benchmark (widths 64-128, 2-4 blocks,
every op but identity, batch 32, ListOps length 64, 10 steps per call; steady state = calls after the first),
in priority order, each phase in a process of its own under a time cap, the whole under a global deadline
(`--deadline`, default 450 s; a phase that cannot get 20 s is skipped, one past its cap is killed and
recorded as such). The JSON is rewritten after every phase, so a run cut short still leaves its results.

  evonas_p256, evonas_p1024   `Population` over the first P of 1,024 distinct mid genomes, float32: cold
                              compile seconds, steady member-steps/s, useful TFLOP/s (3 x forward matmuls).
  ceiling_<i>                 one architecture vmapped: plain `jax.vmap` of the exact-size `TextClassifier`
                              train step over 256 members of ONE genome, distinct init keys, the same batches;
                              for 3 representative genomes (most attention, most recurrence, convolution/MLP only).
  torch_8                     the PyTorch peer (`torch_models.py`) eager on CUDA (CPU elsewhere), 8 genomes one
                              after another; timed after synchronizing the device.
  scan_loop_8                 the JAX `lax.scan` loop over the same 8 genomes, one compilation each.
  evonas_p1024_bfloat16       as evonas_p1024, bfloat16 compute.
  search_1024                 `run_search` of 1,024 children x 50 steps over the mid space (1-4 blocks: the
                              search space has no minimum), generations of 256, on ListOps of the benchmark's
                              shape (length 64, depth 3, 4 arguments), compilation included (empty cache);
                              compared with 1,024 x the torch peer's measured seconds per genome, an
                              EXTRAPOLATION (the peer's time does not include scoring on validation).
Every ratio (`ratios`) is between phases of this one run.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from bench_methods import (
    CLIP_NORM,
    GENOME_SEED,
    INIT_SEED,
    MID_SPACE,
    SMOKE_SPACE,
    TRAIN_SEED,
    BenchConfig,
    Work,
    bench_evonas,
    bench_loop,
    distinct_genomes,
    make_train_step,
)

from evonas.data import listops_task
from evonas.member import Split
from evonas.models import Architecture, TextClassifier, forward_flops
from evonas.optimizers import make_optimizer

SEARCH_TASK = {"max_length": 64, "max_depth": 3, "max_args": 4}  # listops_task's defaults: the benchmark's data


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one accelerator run."""

    config: BenchConfig  # the set: space, steps, batch (population_size unused)
    populations: tuple[int, int]  # evonas's P, small and large
    ceiling_population: int
    ceiling_genomes: int  # how many of the representative genomes (at most 3) get a ceiling phase
    loop_genomes: int
    search: dict[str, Any]  # SearchConfig fields of the end-to-end search
    deadline: float  # seconds for the whole run
    caps: dict[str, float]  # seconds per phase kind


def get_plan(quick: bool, deadline: float | None) -> Plan:
    if quick:
        config = BenchConfig("tiny", 8, steps=10, steps_per_call=5, batch_size=16, space_kwargs=SMOKE_SPACE)
        search = {"num_children": 8, "children_per_generation": 4, "steps": 10, "steps_per_call": 5,
                  "population_size": 4, "sample_size": 2,
                  "space": {"widths": [16], "max_blocks": 1, "ops": ["conv3", "gated_mlp"]},
                  "listops": {**SEARCH_TASK, "num_train": 256, "num_validation": 64, "num_test": 64}}
        caps = {"evonas": 240, "ceiling": 120, "torch": 120, "scan_loop": 180, "search": 240}  # room for a loaded CI
        return Plan(config, populations=(4, 8), ceiling_population=4, ceiling_genomes=1,  # one: the same code path
                    loop_genomes=2, search=search, deadline=deadline or 1500, caps=caps)
    config = BenchConfig("mid", 1024, steps=50, steps_per_call=10, batch_size=32, space_kwargs=MID_SPACE, min_blocks=2)
    search = {"num_children": 1024, "children_per_generation": 256, "population_size": 256, "sample_size": 64,
              "steps": 50, "batch_size": 32,
              "space": {k: list(v) if isinstance(v, tuple) else v for k, v in MID_SPACE.items()},
              "listops": SEARCH_TASK}
    caps = {"evonas": 110, "ceiling": 50, "torch": 45, "scan_loop": 70, "search": 200}
    return Plan(config, populations=(256, 1024), ceiling_population=256, ceiling_genomes=3, loop_genomes=8,
                search=search, deadline=deadline or 450, caps=caps)


def representative(space, genomes: np.ndarray) -> list[int]:
    """Indices of 3 genomes: the most attention blocks, the most recurrent blocks, and the deepest of only
    convolutions and gated MLPs (ties: the first)."""
    archs = [Architecture.from_genome(space, g) for g in genomes]

    def count(arch, ops):
        return sum(block.op in ops for block in arch.blocks)

    attention = max(range(len(archs)), key=lambda i: (count(archs[i], {"attention"}), len(archs[i].blocks)))
    recurrent = max(range(len(archs)), key=lambda i: (count(archs[i], {"gru", "lstm"}), len(archs[i].blocks)))
    plain = max(range(len(archs)), key=lambda i: (count(archs[i], {"conv3", "conv5", "conv7", "gated_mlp"})
                                                  == len(archs[i].blocks), len(archs[i].blocks)))
    return list(dict.fromkeys([attention, recurrent, plain]))


# ---- the phases, each in a process of its own ---------------------------------------------------


def useful_flops(config: BenchConfig, genomes, length: int, num_classes: int) -> float:
    """Useful matmul FLOPs of one train step of `genomes`, summed (3 x forward x batch)."""
    space = config.space()
    return float(sum(3 * forward_flops(Architecture.from_genome(space, g), length, num_classes) * config.batch_size
                     for g in genomes))


def phase_evonas(spec, task, genomes) -> dict[str, Any]:
    config = dataclasses.replace(spec["config"], population_size=len(genomes))
    work = Work(config, genomes, Split(jnp.asarray(task.train.tokens), jnp.asarray(task.train.labels)),
                task.vocab_size, task.num_classes, compute_dtype=spec["compute_dtype"])
    raw = bench_evonas(work)
    rate = len(genomes) * raw["steady_steps_per_member"] / raw["steady_seconds"]
    flops = useful_flops(config, genomes, task.max_length, task.num_classes)
    return {"population": len(genomes), "compute_dtype": spec["compute_dtype"], "compile_seconds": raw["compile_seconds"],
            "total_seconds": raw["total_seconds"], "member_steps_per_second": rate,
            "useful_tflops": flops * raw["steady_steps_per_member"] / raw["steady_seconds"] / 1e12,
            "call_seconds": raw["call_seconds"], "mean_final_loss": raw["mean_final_loss"], "diverged": raw["diverged"],
            "compilations": raw["compilations"]}


def phase_ceiling(spec, task, genomes) -> dict[str, Any]:
    """P members of one genome's exact-size model in one `jax.vmap`, distinct init keys, the same batches."""
    config, population = spec["config"], spec["population"]
    arch = Architecture.from_genome(config.space(), genomes[0])
    module = TextClassifier(arch, task.vocab_size, task.max_length, task.num_classes)
    optimizer = make_optimizer(arch.optimizer, arch.learning_rate, arch.weight_decay, clip_norm=CLIP_NORM)
    tokens, labels = jnp.asarray(task.train.tokens), jnp.asarray(task.train.labels)
    key_data, key_dropout = jax.random.split(jax.random.key(TRAIN_SEED))
    step_fn = jax.vmap(make_train_step(module, optimizer, config.batch_size), (0, 0, None, None, None, None, None))

    def init(key):
        params = module.init(key, tokens[:1], tokens[:1] != 0)["params"]
        return params, optimizer.init(params)

    def train(params, opt_state, step0):
        def body(carry, step):
            params, opt_state, loss = step_fn(*carry, tokens, labels, key_data, key_dropout, step)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), step0 + jnp.arange(config.steps_per_call))
        return params, opt_state, losses[-1]

    start = time.perf_counter()
    params, opt_state = jax.block_until_ready(
        jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(INIT_SEED), population)))
    compiled = jax.jit(train, donate_argnums=(0, 1)).lower(params, opt_state, jnp.int32(0)).compile()
    compile_seconds = time.perf_counter() - start
    call_seconds = []
    for call in range(config.steps // config.steps_per_call):
        call_start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, jnp.int32(call * config.steps_per_call))
        loss.block_until_ready()
        call_seconds.append(time.perf_counter() - call_start)
    steady_steps = config.steps_per_call * (len(call_seconds) - 1)
    flops = population * useful_flops(config, genomes[:1], task.max_length, task.num_classes)
    return {"population": population, "architecture": arch.to_dict(), "compile_seconds": compile_seconds,
            "member_steps_per_second": population * steady_steps / sum(call_seconds[1:]),
            "useful_tflops": flops * steady_steps / sum(call_seconds[1:]) / 1e12, "call_seconds": call_seconds,
            "mean_final_loss": float(jnp.nanmean(loss))}


def phase_torch(spec, task, genomes) -> dict[str, Any]:
    import torch
    import torch_models

    config, space = spec["config"], spec["config"].space()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    archs = [Architecture.from_genome(space, g).to_dict() for g in genomes]
    raw = torch_models.train_loop(archs, np.asarray(task.train.tokens), np.asarray(task.train.labels),
                                  task.vocab_size, task.num_classes, config.batch_size, config.steps,
                                  threads=torch.get_num_threads(), device=device)
    flops = useful_flops(config, genomes, task.max_length, task.num_classes)
    return {"genomes": len(genomes), "device": device, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "total_seconds": raw["total_seconds"], "seconds_per_genome": raw["total_seconds"] / len(genomes),
            "member_steps_per_second": len(genomes) * (config.steps - 1) / raw["steady_seconds"],
            "useful_tflops": flops * (config.steps - 1) / raw["steady_seconds"] / 1e12,
            "mean_final_loss": float(np.mean(raw["final_losses"]))}


def phase_scan_loop(spec, task, genomes) -> dict[str, Any]:
    config = spec["config"]
    work = Work(config, genomes, Split(jnp.asarray(task.train.tokens), jnp.asarray(task.train.labels)),
                task.vocab_size, task.num_classes)
    raw = bench_loop(work, config.steps_per_call)
    flops = useful_flops(config, genomes, task.max_length, task.num_classes)
    return {"genomes": len(genomes), "total_seconds": raw["total_seconds"], "compile_seconds": raw["compile_seconds"],
            "seconds_per_genome": raw["total_seconds"] / len(genomes),
            "member_steps_per_second": len(genomes) * raw["steady_steps_per_member"] / raw["steady_seconds"],
            "useful_tflops": flops * raw["steady_steps_per_member"] / raw["steady_seconds"] / 1e12,
            "mean_final_loss": raw["mean_final_loss"]}


def phase_search(spec, task, genomes) -> dict[str, Any]:
    from evonas.search import SearchConfig, run_search

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        summary = run_search(SearchConfig(**spec["search"]), run_dir, progress=False)
    return {"end_to_end_seconds": time.perf_counter() - start, "in_search_seconds": summary["wall_seconds"],
            "children": summary["children"], "compilations": summary["compilations"],
            "best_val_accuracy": summary["best_val_accuracy"], "diverged": summary["diverged"],
            "search_config": spec["search"]}


PHASES = {"evonas": phase_evonas, "ceiling": phase_ceiling, "torch": phase_torch, "scan_loop": phase_scan_loop,
          "search": phase_search}


def child(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    spec["config"] = BenchConfig(**spec["config"])
    task = listops_task(seed=0)
    genomes = np.asarray(spec["genomes"], np.int32)
    result = PHASES[spec["kind"]](spec, task, genomes)
    result |= {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
               "jax": jax.__version__}
    Path(result_path).write_text(json.dumps(result))


# ---- the parent: phases under caps and a deadline ----------------------------------------------


def phases(plan: Plan, genomes: np.ndarray) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, spec) in priority order."""
    small, large = plan.populations
    ceiling = representative(plan.config.space(), genomes[:small])[:plan.ceiling_genomes]
    loop = genomes[:plan.loop_genomes].tolist()
    return [
        (f"evonas_p{small}", "evonas", {"genomes": genomes[:small].tolist(), "compute_dtype": "float32"}),
        *[(f"ceiling_{i}", "ceiling", {"genomes": [genomes[i].tolist()], "population": plan.ceiling_population,
                                       "genome_index": i}) for i in ceiling],
        (f"torch_{plan.loop_genomes}", "torch", {"genomes": loop}),
        (f"scan_loop_{plan.loop_genomes}", "scan_loop", {"genomes": loop}),
        (f"evonas_p{large}", "evonas", {"genomes": genomes[:large].tolist(), "compute_dtype": "float32"}),
        (f"evonas_p{large}_bfloat16", "evonas", {"genomes": genomes[:large].tolist(), "compute_dtype": "bfloat16"}),
        (f"search_{plan.search['num_children']}", "search", {"genomes": [], "search": plan.search}),
    ]


def run_phase(kind: str, spec: dict[str, Any], cap: float, workdir: Path, name: str) -> dict[str, Any]:
    spec_path, result_path, log_path = (workdir / f"{name}.spec.json", workdir / f"{name}.json",
                                        workdir / f"{name}.log")
    spec_path.write_text(json.dumps(spec | {"kind": kind}))
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # every phase compiles cold
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            code = subprocess.run([sys.executable, __file__, str(spec_path), str(result_path)], env=env, stdout=log, check=False,
                                  stderr=subprocess.STDOUT, timeout=cap).returncode
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "cap_seconds": cap, "wall_seconds": time.perf_counter() - start}
    wall = time.perf_counter() - start
    if code:
        return {"status": "failed", "returncode": code, "wall_seconds": wall,
                "log_tail": log_path.read_text()[-1500:]}
    return {"status": "ok", "wall_seconds": wall, **json.loads(result_path.read_text())}


def ratios(results: dict[str, Any], plan: Plan) -> dict[str, float]:
    """Every ratio between phases that finished: evonas over the ceiling (mean of the ceilings), over torch and
    over the scan loop, in steady member-steps/s; the search's end-to-end speed-up over the extrapolated peer."""
    done = {name: r for name, r in results["phases"].items() if r.get("status") == "ok"}
    rate = {name: r["member_steps_per_second"] for name, r in done.items() if "member_steps_per_second" in r}
    ceilings = [rate[name] for name in rate if name.startswith("ceiling_")]
    out = {}
    for name in [n for n in rate if n.startswith("evonas_")]:
        if ceilings:
            out[f"{name}_over_ceiling_mean"] = rate[name] / float(np.mean(ceilings))
            out[f"{name}_over_ceiling_min"] = rate[name] / min(ceilings)
        for peer in (f"torch_{plan.loop_genomes}", f"scan_loop_{plan.loop_genomes}"):
            if peer in rate:
                out[f"{name}_over_{peer}"] = rate[name] / rate[peer]
    search, torch = done.get(f"search_{plan.search['num_children']}"), done.get(f"torch_{plan.loop_genomes}")
    if search and torch:
        extrapolated = plan.search["num_children"] * torch["seconds_per_genome"]
        results["search_vs_torch"] = {
            "torch_seconds_extrapolated": extrapolated, "evonas_end_to_end_seconds": search["end_to_end_seconds"],
            "note": f"torch: {plan.search['num_children']} x its measured seconds per genome "
                    f"({torch['seconds_per_genome']:.3f} s, {plan.loop_genomes} genomes, no validation pass); "
                    "extrapolated, not run"}
        out["search_speedup_over_torch_extrapolated"] = extrapolated / search["end_to_end_seconds"]
    return out


def format_table(results: dict[str, Any]) -> str:
    header = f"{'phase':<24} {'status':<8} {'compile s':>9} {'member-steps/s':>14} {'useful TFLOP/s':>14} {'total s':>8}"
    lines = [header, "-" * len(header)]
    for name, r in results["phases"].items():
        def number(key, fmt, r=r):
            return format(r[key], fmt) if key in r else "-"

        total = next((format(r[k], ".1f") for k in ("total_seconds", "end_to_end_seconds", "wall_seconds") if k in r),
                     "-")
        lines.append(f"{name:<24} {r['status']:<8} {number('compile_seconds', '.1f'):>9} "
                     f"{number('member_steps_per_second', ',.0f'):>14} {number('useful_tflops', '.3f'):>14} "
                     f"{total:>8}")
    lines += [f"{k}: {v:.3f}" for k, v in results["ratios"].items()]
    return "\n".join(lines)


def main(out: str, quick: bool, log, deadline: float | None = None) -> dict[str, Any]:
    from bench_population import machine, source_hashes, write_json

    start, load_start = time.perf_counter(), os.getloadavg()
    plan = get_plan(quick, deadline)
    space = plan.config.space()
    genomes = distinct_genomes(space, jax.random.key(GENOME_SEED), plan.populations[1])
    results: dict[str, Any] = {"mode": "accelerator", "quick": quick, "backend": jax.default_backend(),
                               "devices": [str(d) for d in jax.devices()], "set": plan.config.name,
                               "deadline_seconds": plan.deadline, "phases": {}, "ratios": {},
                               "source_md5": source_hashes()}
    with tempfile.TemporaryDirectory() as workdir:
        for name, kind, spec in phases(plan, genomes):
            left = plan.deadline - (time.perf_counter() - start) - 5
            cap = min(plan.caps[kind], left)
            if cap < 20:
                results["phases"][name] = {"status": "skipped", "seconds_left": left}
                log(f"[accelerator] {name}: skipped, {left:.0f} s left")
                continue
            log(f"[accelerator] {name} (cap {cap:.0f} s) ...")
            spec = spec | {"config": plan.config.__dict__}
            results["phases"][name] = result = run_phase(kind, spec, cap, Path(workdir), name)
            log(f"  {result['status']}, {result['wall_seconds']:.0f} s")
            results["ratios"] = ratios(results, plan)
            results |= {"machine": machine(load_start), "wall_seconds": time.perf_counter() - start}
            write_json(out, results)
    log(format_table(results))
    return results


if __name__ == "__main__":
    child(*sys.argv[1:])
