"""Whole searches: `evonas.search.run_search` against the same children trained one at a time by the PyTorch peer.

    python experiments/bench_population.py --search --out experiments/results/bench_search.json   # ~20-30 min
    python experiments/bench_population.py --search --quick --out /tmp/search.json   # smoke run: 8 children of a small space

Per space (mid: widths 64/96/128, up to 4 blocks; tiny: widths 16/32, up to 2 blocks; every op but identity),
a search of 512 children x 50 steps in generations of 64 on the built-in ListOps task (aging evolution
with a population of 64 and samples of 16, as large as a generation must be; SearchConfig's defaults
otherwise: batch 32, 25 steps per call, seed 0), run by evonas twice, each in
a process of its own: `cold` with JAX's persistent compilation cache in a new empty directory, `warm` with
that directory as the cold run left it. Then the cold run's children (its history.jsonl) trained by the
PyTorch peer (`torch_models.py`), one process per core, pinned, 1 thread each, children split interleaved,
each for the same steps at the same batch size on the task's train split and then scored on its validation
split (accuracy and loss over the whole split, in batches of 256, dropout off), as evonas scores them.
`end_to_end_seconds` is the wall time from launching the method's first process to its last exit, so
interpreter start, imports, data and (for evonas) compilation count for both. SearchConfig's space has no
minimum block count, so the mid space here has 1-4 blocks where the population benchmark's mid set has 2-4.
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

import numpy as np
from bench_methods import OPS_WITHOUT_IDENTITY, run_method, worker_cores

from evonas.models import Architecture
from evonas.search import SearchConfig, load_task, run_search
from evonas.space import text_classifier_space

HERE = Path(__file__).resolve().parent
SPACES = {
    "mid": {"widths": [64, 96, 128], "max_blocks": 4, "ops": list(OPS_WITHOUT_IDENTITY)},
    "tiny": {"widths": [16, 32], "max_blocks": 2, "ops": list(OPS_WITHOUT_IDENTITY)},
}


def search_configs(quick: bool) -> dict[str, SearchConfig]:
    """The searches to compare: mid and tiny, 512 children x 50 steps; or one small tiny search."""
    if quick:
        small_task = {"max_depth": 2, "max_args": 2, "max_length": 12, "num_train": 512, "num_validation": 64,
                      "num_test": 64}
        small_space = {"widths": [16], "max_blocks": 1, "ops": ["conv3", "gated_mlp"]}  # compiles in seconds
        return {"tiny": SearchConfig(num_children=8, children_per_generation=4, steps=10, steps_per_call=5,
                                     population_size=4, sample_size=2, space=small_space, listops=small_task)}
    # Aging evolution needs a population at least a generation large: 64, with SearchConfig's 4:1 sample ratio.
    return {name: SearchConfig(num_children=512, children_per_generation=64, population_size=64, sample_size=16,
                               steps=50, space=space)
            for name, space in SPACES.items()}


def run_evonas(config: SearchConfig, run_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """One whole search in a process of its own, with `cache_dir` as JAX's persistent compilation cache."""
    config_path, result_path = run_dir.with_suffix(".config.json"), run_dir.with_suffix(".result.json")
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": str(cache_dir)}
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, str(config_path), str(run_dir), str(result_path)], env=env, check=True)
    wall = time.perf_counter() - start
    summary = json.loads(result_path.read_text())
    return {"end_to_end_seconds": wall, "in_process_seconds": summary["wall_seconds"],
            "compilations": summary["compilations"], "best_val_accuracy": summary["best_val_accuracy"],
            "children": summary["children"], "diverged": summary["diverged"],
            "cache_entries_after": sum(1 for _ in cache_dir.iterdir()) if cache_dir.is_dir() else 0}


def history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def run_torch(config: SearchConfig, children: list[dict[str, Any]], workdir: Path) -> dict[str, Any] | None:
    """The children's genomes trained and scored by the PyTorch peer, one process per core."""
    task = load_task(config)
    space = text_classifier_space(**config.space)
    np.savez(workdir / "train.npz", tokens=task.train.tokens, labels=task.train.labels)
    np.savez(workdir / "validation.npz", tokens=task.validation.tokens, labels=task.validation.labels)
    genomes = [child["genome"] for child in children]
    spec = {"config": {"batch_size": config.batch_size, "steps": config.steps}, "genomes": genomes,
            "archs": [Architecture.from_genome(space, np.asarray(g)).to_dict() for g in genomes],
            "data": str(workdir / "train.npz"), "validation_data": str(workdir / "validation.npz"),
            "vocab_size": task.vocab_size, "num_classes": task.num_classes}
    raw = run_method("torch_loop", spec, workdir)
    if raw is None:
        return None
    workers = raw["workers"]
    accuracies = np.concatenate([w["validation_accuracies"] for w in workers])
    return {"end_to_end_seconds": raw["wall_seconds"], "processes": len(workers), "threads_per_process": 1,
            "allocator": raw["allocator"],
            "in_process_seconds": max(w["total_seconds"] for w in workers),
            "evaluation_seconds": sum(w["evaluation_seconds"] for w in workers),
            "member_steps_per_second": sum(len(w["indices"]) * w["steady_steps_per_member"] / w["steady_seconds"]
                                           for w in workers),
            "best_val_accuracy": float(np.max(accuracies)), "mean_val_accuracy": float(np.mean(accuracies)),
            "workers": [{"children": len(w["indices"]), "cpu_affinity": w["cpu_affinity"],
                         "in_process_seconds": w["total_seconds"]} for w in workers]}


def compare(name: str, config: SearchConfig, workdir: Path, log, results: dict[str, Any], save) -> None:
    """Cold search, warm search, torch peer on the cold search's children; `save()` after each phase."""
    row = results["searches"][name] = {"config": dataclasses.asdict(config)}
    cache = workdir / f"{name}_cache"
    for run in ("cold", "warm"):
        log(f"[search {name}] evonas, compilation cache {run} ...")
        row[f"evonas_{run}"] = run_evonas(config, workdir / f"{name}_{run}", cache)
        log(f"  {row[f'evonas_{run}']['end_to_end_seconds']:.1f} s")
        save()
    children = history(workdir / f"{name}_cold")
    row["same_history_cold_warm"] = children == history(workdir / f"{name}_warm")
    log(f"[search {name}] torch peer on the same {len(children)} children, one process per core ...")
    (workdir / name).mkdir()
    row["torch_per_core"] = torch = run_torch(config, children, workdir / name)
    if torch is not None:
        log(f"  {torch['end_to_end_seconds']:.1f} s")
        for run in ("cold", "warm"):
            row[f"evonas_{run}_faster_by"] = torch["end_to_end_seconds"] / row[f"evonas_{run}"]["end_to_end_seconds"]
    save()


def format_table(results: dict[str, Any]) -> str:
    header = (f"{'space':<6} {'children':>8} {'steps':>5} {'evonas cold s':>13} {'evonas warm s':>13} "
              f"{'torch/core s':>12} {'faster: cold':>12} {'warm':>6}")
    lines = [header, "-" * len(header)]
    for name, row in results["searches"].items():
        config, torch = row["config"], row.get("torch_per_core")
        cold, warm = row.get("evonas_cold"), row.get("evonas_warm")
        lines.append(f"{name:<6} {config['num_children']:>8} {config['steps']:>5} "
                     f"{cold['end_to_end_seconds'] if cold else float('nan'):>13.1f} "
                     f"{warm['end_to_end_seconds'] if warm else float('nan'):>13.1f} "
                     f"{torch['end_to_end_seconds'] if torch else float('nan'):>12.1f} "
                     f"{row.get('evonas_cold_faster_by', float('nan')):>11.2f}x "
                     f"{row.get('evonas_warm_faster_by', float('nan')):>5.2f}x")
    return "\n".join(lines)


def main(out: str, quick: bool, log) -> dict[str, Any]:
    from bench_population import machine, source_hashes, write_json

    start, load_start, sources = time.perf_counter(), os.getloadavg(), source_hashes()
    results: dict[str, Any] = {"mode": "search", "quick": quick, "searches": {}, "cores": worker_cores(),
                               "note": "a shared machine: other agents' load runs beside this one (machine.loadavg_*)"}

    def save():
        results.update(machine=machine(load_start), wall_seconds=time.perf_counter() - start, source_md5=sources,
                       source_changed_during_run=source_hashes() != sources)
        write_json(out, results)

    with tempfile.TemporaryDirectory() as workdir:
        for name, config in search_configs(quick).items():
            compare(name, config, Path(workdir), log, results, save)
    save()
    log(format_table(results))
    return results


def child(config_path: str, run_dir: str, result_path: str) -> None:
    """The evonas process: one whole search, its summary written to `result_path`."""
    config = SearchConfig.from_dict(json.loads(Path(config_path).read_text()))
    summary = run_search(config, run_dir, progress=False)
    Path(result_path).write_text(json.dumps(summary))


if __name__ == "__main__":
    child(*sys.argv[1:])
