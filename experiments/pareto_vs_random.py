"""Does Pareto-mode aging evolution find a better accuracy/size front than random search at equal budget?

Command:
    python experiments/pareto_vs_random.py --seeds 0 1 2 3 4   # 10 default-size searches, ~10-25 min on 2 cores

Runs `evonas search` (through `run_search`) with the default `SearchConfig` plus
`pareto = {"val_accuracy": "max", "params": "min"}`, once per seed with `--strategy evolution` (NSGA-II
tournaments in aging evolution) and `--strategy random`, the same seeds, budget and data. Each run's front
(its `pareto.json`) is scored by its hypervolume in the (validation accuracy, parameters) plane above the
reference point accuracy 0, parameters `REFERENCE_PARAMS`, divided by the area of that box (1 × REFERENCE_PARAMS),
so 1.0 would be a perfect model with no parameters. `--config` is a JSON file of `SearchConfig` fields that
override the defaults for both strategies. Writes JSON (default `experiments/results/pareto_vs_random.json`): per
run the hypervolume, front size, best accuracy, wall seconds and load average; per strategy mean and sample std; per
seed evolution's hypervolume minus random search's. experiments/README.md has the results.
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from evonas.fitness import PARETO_FILE
from evonas.pareto import hypervolume_2d
from evonas.search import SearchConfig, run_search

RESULTS = Path(__file__).resolve().parent / "results" / "pareto_vs_random.json"
STRATEGIES = ("evolution", "random")
PARETO = {"val_accuracy": "max", "params": "min"}
REFERENCE_PARAMS = 200_000  # above the default space's models: the largest of 300 random genomes has 135,306


def front_hypervolume(front: list[dict], reference_params: float = REFERENCE_PARAMS) -> float:
    """Normalized hypervolume of a pareto.json front in (accuracy, -params), reference (0, -reference_params)."""
    points = np.asarray([[r["val_accuracy"], -r["params"]] for r in front], float).reshape(-1, 2)
    return hypervolume_2d(points, (0.0, -reference_params)) / reference_params


def run_one(config: SearchConfig, run_dir: Path) -> dict:
    load_before = os.getloadavg()[0]
    summary = run_search(config, run_dir, progress=False)
    front = json.loads((run_dir / PARETO_FILE).read_text())["front"]
    return {"seed": config.seed, "strategy": config.strategy, "hypervolume": front_hypervolume(front),
            "front_size": len(front), "front": [[r["val_accuracy"], r["params"]] for r in front],
            "best_val_accuracy": max(r["val_accuracy"] for r in front),
            "smallest_params": min(r["params"] for r in front), "wall_seconds": summary["wall_seconds"],
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}


def aggregate(runs: list[dict]) -> dict:
    volumes = {s: [r["hypervolume"] for r in runs if r["strategy"] == s] for s in STRATEGIES}
    by_seed = {(r["seed"], r["strategy"]): r["hypervolume"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    gaps = [by_seed[seed, "evolution"] - by_seed[seed, "random"] for seed in seeds]
    return {"mean_hypervolume": {s: statistics.mean(v) for s, v in volumes.items()},
            "std_hypervolume": {s: statistics.stdev(v) if len(v) > 1 else None for s, v in volumes.items()},
            "gap_per_seed": dict(zip(map(str, seeds), gaps)), "mean_gap": statistics.mean(gaps),
            "evolution_ahead_on_seeds": sum(g > 0 for g in gaps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--config", help="JSON file of SearchConfig fields overriding the defaults")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON (default: %(default)s)")
    parser.add_argument("--runs", help="where the run directories go (default: a temporary directory)")
    args = parser.parse_args(argv)
    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for strategy in STRATEGIES:
                config = SearchConfig.from_dict({"pareto": PARETO, **overrides, "seed": seed, "strategy": strategy})
                runs.append(run_one(config, Path(args.runs or scratch) / f"{strategy}_seed{seed}"))
                row = runs[-1]
                print(f"seed {seed} {strategy:<9} hypervolume {row['hypervolume']:.4f} front {row['front_size']} "
                      f"{row['wall_seconds']:.0f} s load {row['load_average_before']:.1f}", flush=True)
    results = {"config": dataclasses.asdict(config) | {"seed": args.seeds, "strategy": list(STRATEGIES)},
               "reference_point": {"val_accuracy": 0.0, "params": REFERENCE_PARAMS}, "runs": runs, **aggregate(runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k not in ("config", "runs")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
