"""Do progressive hurdles reach the plain search's best accuracy for less training, on the built-in task?

Command:
    python experiments/hurdles_study.py [--seeds 0 1 2] [--hurdle-steps 25 75] [--hurdle-quantile 0.5]
        [--hurdle-children 192] [--config FILE] [--out FILE] [--smoke]

Per seed, one plain search (the default `SearchConfig`: every child trains `steps`) and one with hurdles
(`hurdle_steps`, `hurdle_quantile`) over a larger child budget (`--hurdle-children`), one after another,
with the same seed and data. The plain search's best validation accuracy is the target: the hurdle search
reaches it after the first generation whose best-so-far is at least as high, and `steps_to_reach` is the
train steps it had spent by then (every child's `steps` in history.jsonl, whole generations: a generation's
best is known when it has trained). The floor: at most half the plain search's total train steps. Also the
Spearman rank correlation, over the plain runs' children, between a child's validation accuracy after the
first hurdle's steps (re-trained that far with the run's own keys: the same parameters the child had then)
and its final fitness: how well the first stage predicts the last. Writes JSON (default
`experiments/results/hurdles_study.json`) with the load average around every run; experiments/README.md
has the table.
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from scipy import stats

from evonas.population import Population
from evonas.search import SearchConfig, load_task, run_search
from evonas.supernet import PopulationModel

RESULTS = Path(__file__).resolve().parent / "results" / "hurdles_study.json"
SMOKE = {"num_children": 8, "children_per_generation": 4, "population_size": 4, "sample_size": 2, "steps": 10,
         "steps_per_call": 5, "space": {"max_blocks": 1, "ops": ["identity", "conv3"], "widths": [16], "heads": [1]},
         "listops": {"num_train": 200, "num_validation": 100, "num_test": 20, "max_length": 12}}


def read_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def best_so_far_by_generation(history: list[dict], steps: int) -> list[tuple[int, float]]:
    """After each generation: the train steps spent so far and the best fitness so far (-inf while none)."""
    spent, best, curve = 0, -np.inf, []
    for generation in sorted({r["generation"] for r in history}):
        children = [r for r in history if r["generation"] == generation]
        spent += sum(r.get("steps", steps) for r in children)
        best = max([best, *(r["fitness"] for r in children if r["fitness"] is not None)])
        curve.append((spent, best))
    return curve


def reach(history: list[dict], steps: int, target: float, seconds: list[float]) -> tuple[int | None, float | None]:
    """The train steps spent, and the wall seconds (per generation, from generations.jsonl, compiling
    included), when the best fitness so far first reached `target`; None, None if it never did."""
    for (spent, best), wall in zip(best_so_far_by_generation(history, steps), seconds):
        if best >= target:
            return spent, wall
    return None, None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(config: SearchConfig, run_dir: Path) -> tuple[dict, list[dict], list[float]]:
    """One search's figures, with the machine's load around it, its history and its seconds per generation."""
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds()
    summary = run_search(config, run_dir, progress=False)
    history = read_history(run_dir)
    seconds = [json.loads(line)["wall_seconds"] for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    return {
        "seed": config.seed, "hurdle_steps": config.hurdle_steps, "hurdle_quantile": config.hurdle_quantile,
        "children": summary["children"], "train_steps": summary["train_steps"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "stopped": sum(r["hurdle_stopped"] for r in history),
        "wall_seconds": summary["wall_seconds"], "cpu_seconds": cpu_seconds() - cpu_before,
        "compilations": summary["compilations"],
        "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
    }, history, seconds


def early_accuracies(config: SearchConfig, history: list[dict], steps: int) -> np.ndarray:
    """Each child's validation accuracy after its first `steps` train steps, trained again as its search trained
    it (the same init and batch keys per generation, so the same parameters it had at that step)."""
    return early_fits(config, history, steps)["validation_accuracy"]


def early_fits(config: SearchConfig, history: list[dict], steps: int) -> dict[str, np.ndarray]:
    """`Population.fit`'s results for every child of `history` in order, trained again for its first `steps`
    steps as `early_accuracies` says: "validation_accuracy" float[children], "losses" float[children, steps]."""
    task = load_task(config)
    population = Population(PopulationModel(config.search_space(), task.vocab_size, task.max_length,
                                            task.num_classes), dataclasses.replace(config, steps=steps).train_config())
    train, validation = population.put_split(task.train), population.put_split(task.validation)
    key, fits = jax.random.key(config.seed), []
    for generation in sorted({r["generation"] for r in history}):
        genomes = np.array([r["genome"] for r in history if r["generation"] == generation], np.int32)
        _, key_init, key_train = jax.random.split(jax.random.fold_in(key, generation), 3)
        fits.append(population.fit(jax.random.split(key_init, len(genomes)), genomes, train,
                                   {"validation": validation}, key_train, steps, len(genomes)))
    return {name: np.concatenate([np.asarray(fit[name]) for fit in fits]) for name in ("validation_accuracy", "losses")}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def write(args, argv, runs: list[dict], correlations: list[dict]) -> dict:
    """The study's JSON at `args.out`, with the mean and sd over seeds of each arm; returns that summary."""
    summary = {arm: {key: spread([r[key] for r in runs if r["arm"] == arm])
                     for key in ("train_steps", "wall_seconds", "best_val_accuracy")} for arm in ("plain", "hurdles")}
    summary["hurdles"]["seeds_meeting_floor"] = sum(r["arm"] == "hurdles" and r["meets_floor"] for r in runs)
    if correlations:
        summary["first_hurdle_spearman"] = spread([c["spearman"] for c in correlations])
    result = {"command": "python experiments/hurdles_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "seeds": args.seeds, "hurdle_steps": args.hurdle_steps, "hurdle_quantile": args.hurdle_quantile,
              "hurdle_children": args.hurdle_children, "smoke": args.smoke, "runs": runs, "summary": summary,
              "first_hurdle_spearman": correlations}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hurdle-steps", type=int, nargs="+", default=[25, 75])
    parser.add_argument("--hurdle-quantile", type=float, default=0.5)
    parser.add_argument("--hurdle-children", type=int, default=192)
    parser.add_argument("--config", help="JSON file of SearchConfig fields overriding the defaults of both searches")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every part, for tests")
    parser.add_argument("--no-spearman", action="store_true", help="skip the first-hurdle rank correlation")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else {}
    if args.config:
        base = {**base, **json.loads(Path(args.config).read_text())}
    runs, correlations = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            plain = SearchConfig(**{**base, "seed": seed})
            hurdled = dataclasses.replace(plain, num_children=args.hurdle_children, hurdle_steps=tuple(args.hurdle_steps),
                                          hurdle_quantile=args.hurdle_quantile)
            plain_row, plain_history, plain_seconds = run_one(plain, Path(scratch) / f"plain{seed}")
            hurdle_row, hurdle_history, hurdle_seconds = run_one(hurdled, Path(scratch) / f"hurdles{seed}")
            target = plain_row["best_val_accuracy"]
            plain_row["steps_to_best"], plain_row["seconds_to_best"] = reach(plain_history, plain.steps, target,
                                                                            plain_seconds)
            reached, hurdle_row["seconds_to_reach_plain_best"] = reach(hurdle_history, plain.steps, target,
                                                                       hurdle_seconds)
            hurdle_row["steps_to_reach_plain_best"] = reached
            hurdle_row["meets_floor"] = reached is not None and reached <= plain_row["train_steps"] / 2
            hurdle_row["curve"] = best_so_far_by_generation(hurdle_history, plain.steps)
            plain_row["curve"] = best_so_far_by_generation(plain_history, plain.steps)
            runs += [{"arm": "plain", **plain_row}, {"arm": "hurdles", **hurdle_row}]
            if not args.no_spearman:
                early = early_accuracies(plain, plain_history, args.hurdle_steps[0])
                final = np.array([r["fitness"] if r["fitness"] is not None else -np.inf for r in plain_history])
                correlations.append({"seed": seed, "spearman": float(stats.spearmanr(early, final).statistic),
                                     "children": len(final)})
            print(json.dumps({k: v for k, v in hurdle_row.items() if k != "curve"}), flush=True)
            write(args, argv, runs, correlations)  # after every seed: a long study shows its progress
    print(json.dumps(write(args, argv, runs, correlations), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
