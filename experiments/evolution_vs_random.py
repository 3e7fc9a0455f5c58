"""Does aging evolution beat random search on the built-in task at the default budget?

Command:
    python experiments/evolution_vs_random.py [--seeds 0 1 2] [--config FILE] [--out FILE] [--runs DIR]

Runs `evonas search` (through `run_search`) with the default `SearchConfig`, once per seed and strategy,
one run after another: `--strategy evolution` and `--strategy random` with the same seeds, budget and data.
`--config` is a JSON file of `SearchConfig` fields that override the defaults for both strategies.
Prints a table and writes JSON (default `experiments/results/evolution_vs_random.json`): per seed and
strategy the best validation accuracy, the first generation's median, wall seconds, compilations and the
load average before and after the run; per strategy the mean and sample standard deviation over seeds; and
per seed the gap between evolution's best and random search's best. experiments/README.md has the results.
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path

from evonas.search import SearchConfig, run_search

RESULTS = Path(__file__).resolve().parent / "results" / "evolution_vs_random.json"
STRATEGIES = ("evolution", "random")


def run_one(config: SearchConfig, run_dir: Path) -> dict:
    """One search's figures for the comparison, with the machine's load around it (timings need it)."""
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds()
    summary = run_search(config, run_dir, progress=False)
    return {
        "seed": config.seed,
        "strategy": config.strategy,
        "best_val_accuracy": summary["best_val_accuracy"],
        "first_generation_median_val_accuracy": summary["first_generation_median_val_accuracy"],
        "wall_seconds": summary["wall_seconds"],
        "cpu_seconds": cpu_seconds() - cpu_before,
        "compilations": summary["compilations"],
        "diverged": summary["diverged"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far: on a busy machine, a bound on the quiet wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def aggregate(runs: list[dict]) -> dict:
    """Mean and spread of each strategy's best accuracy over seeds, and evolution's gap over random per seed."""
    best = {s: [r["best_val_accuracy"] for r in runs if r["strategy"] == s] for s in STRATEGIES}
    by_seed = {(r["seed"], r["strategy"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    gaps = [by_seed[seed, "evolution"]["best_val_accuracy"] - by_seed[seed, "random"]["best_val_accuracy"]
            for seed in seeds]
    return {
        "mean_best_val_accuracy": {s: statistics.mean(v) for s, v in best.items()},
        "std_best_val_accuracy": {s: statistics.stdev(v) if len(v) > 1 else None  # undefined over one seed
                                  for s, v in best.items()},
        "gap_per_seed": dict(zip(map(str, seeds), gaps)),
        "mean_gap": statistics.mean(gaps),
        "evolution_above_first_generation_median": all(
            by_seed[seed, "evolution"]["best_val_accuracy"] > by_seed[seed, "evolution"]["first_generation_median_val_accuracy"]
            for seed in seeds),
    }


def table(runs: list[dict]) -> str:
    lines = ["| seed | strategy  | best val acc | 1st-gen median | wall s | CPU s | load |",
             "|-----:|-----------|-------------:|---------------:|-------:|------:|-----:|"]
    lines += [f"| {r['seed']} | {r['strategy']:<9} | {r['best_val_accuracy']:.3f} | "
              f"{r['first_generation_median_val_accuracy']:.3f} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} | "
              f"{(r['load_average_before'] + r['load_average_after']) / 2:.1f} |" for r in runs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", help="JSON file of SearchConfig fields overriding the defaults")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON (default: %(default)s)")
    parser.add_argument("--runs", help="where the run directories go (default: a temporary directory)")
    args = parser.parse_args(argv)
    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs or scratch)
        runs = []
        for seed in args.seeds:
            for strategy in STRATEGIES:
                config = SearchConfig.from_dict({**overrides, "seed": seed, "strategy": strategy})
                runs.append(run_one(config, runs_dir / f"{strategy}_seed{seed}"))
                print(table(runs[-1:]).splitlines()[-1], flush=True)
    results = {"config": dataclasses.asdict(config) | {"seed": args.seeds, "strategy": list(STRATEGIES)},
               "runs": runs, **aggregate(runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(runs))
    print(json.dumps({k: v for k, v in results.items() if k not in ("config", "runs")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
