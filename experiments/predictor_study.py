"""How well does the cheap fitness predictor rank children before they train, on the history of real runs?

Command:
    python experiments/predictor_study.py RUN_DIR... [--early-steps 25] [--versus PLAIN PREDICTOR]... [--out FILE]

Per run directory of `evonas search` (its config.json and history.jsonl), leave-future-out: for each generation t
whose earlier generations hold at least the run's `min_predictor_records()` candidates (default its population),
the ranker of `evonas.predictor` is fitted on the candidates of generations < t and predicts those of generation t.
Its Spearman rank correlation with their final fitness is given within each generation (mean over generations:
what the pool selection uses) and pooled over every predicted child. Beside it, on the same children: signals the
history already holds for free (params, flops), and with `--early-steps N` two early-training signals, each child
trained again for its first N steps with its run's keys (`hurdles_study.early_fits`): the negated sum of its
training losses over those steps, and its validation accuracy after them.

`--versus PLAIN PREDICTOR` (repeatable): two runs of the same seed and budget, one plain and one with
`--predictor-pool`; their best validation accuracy, train steps and wall time, and the predictor run's own
Spearman (its history's `predicted_fitness` against fitness, within generations). Writes JSON (default
`experiments/results/predictor_study.json`) with the load average; experiments/README.md has the table.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from evonas import predictor
from evonas.fitness import is_candidate
from evonas.search import load_run_config

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_study.json"


def read_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def spearman(x, y) -> float | None:
    """Spearman's rho, or None where either side is constant or has fewer than 3 values."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def leave_future_out(history: list[dict], space, min_records: int) -> dict[int, np.ndarray]:
    """Per predicted generation: the ranker's prediction for each candidate of it, fitted on earlier generations."""
    predictions = {}
    for generation in sorted({r["generation"] for r in history}):
        ranker = predictor.fit_history([r for r in history if r["generation"] < generation], space, min_records)
        children = [r for r in history if r["generation"] == generation and is_candidate(r)]
        if ranker is not None and children:
            x = predictor.features(np.array([r["genome"] for r in children]), space)
            predictions[generation] = predictor.predict(ranker, x)
    return predictions


def correlations(signals: dict[str, dict[int, np.ndarray]], fitness: dict[int, np.ndarray]) -> dict[str, dict]:
    """Per signal: Spearman with fitness within each generation (and their mean) and pooled over them."""
    result = {}
    for name, values in signals.items():
        within = {g: spearman(values[g], fitness[g]) for g in values}
        kept = [rho for rho in within.values() if rho is not None]
        result[name] = {"within_generation_mean": statistics.mean(kept) if kept else None,
                        "within_generation": within,
                        "pooled": spearman(np.concatenate(list(values.values())),
                                           np.concatenate([fitness[g] for g in values])),
                        "children": int(sum(len(v) for v in values.values()))}
    return result


def study_run(run_dir: Path, early_steps: int | None) -> dict:
    config, history = load_run_config(run_dir), read_history(run_dir)
    space = config.search_space()
    predicted = leave_future_out(history, space, config.min_predictor_records())
    by_generation = {g: [r for r in history if r["generation"] == g and is_candidate(r)] for g in predicted}
    fitness = {g: np.array([r["fitness"] for r in rows]) for g, rows in by_generation.items()}
    signals = {"ridge_one_hot": predicted,
               **{name: {g: np.array([r[name] for r in rows], float) for g, rows in by_generation.items()}
                  for name in ("params", "flops")}}
    if early_steps:
        from hurdles_study import early_fits

        early = early_fits(config, history, early_steps)
        row = {r["id"]: i for i, r in enumerate(history)}
        loss_sum = -np.asarray(early["losses"]).sum(axis=1)
        signals[f"neg_train_loss_sum_{early_steps}_steps"] = {
            g: np.array([loss_sum[row[r["id"]]] for r in rows]) for g, rows in by_generation.items()}
        signals[f"val_accuracy_after_{early_steps}_steps"] = {
            g: np.array([early["validation_accuracy"][row[r["id"]]] for r in rows]) for g, rows in by_generation.items()}
    return {"run": str(run_dir), "dataset": config.dataset or config.task, "seed": config.seed,
            "children": len(history), "steps": config.steps, "predictor_pool": config.predictor_pool,
            "min_records": config.min_predictor_records(), "predicted_generations": sorted(predicted),
            "signals": correlations(signals, fitness)}


def versus(plain_dir: Path, predictor_dir: Path) -> dict:
    """A plain run against a predictor run of the same seed and child budget."""
    rows = {}
    for arm, run_dir in (("plain", plain_dir), ("predictor", predictor_dir)):
        summary, history = json.loads((run_dir / "summary.json").read_text()), read_history(run_dir)
        rows[arm] = {"run": str(run_dir), "best_val_accuracy": summary["best_val_accuracy"],
                     "children": summary["children"], "train_steps": summary["train_steps"],
                     "wall_seconds": summary["wall_seconds"],
                     "distinct_genomes": len({tuple(r["genome"]) for r in history})}
    history = read_history(predictor_dir)
    ranked = sorted({r["generation"] for r in history if "predicted_fitness" in r})
    online = [spearman(*zip(*[(r["predicted_fitness"], r["fitness"]) for r in history
                              if r["generation"] == g and is_candidate(r)], strict=True)) for g in ranked]
    kept = [rho for rho in online if rho is not None]
    rows["predictor"]["online_spearman_within_generation_mean"] = statistics.mean(kept) if kept else None
    rows["seed"] = load_run_config(plain_dir).seed
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="*", help="run directories of `evonas search`")
    parser.add_argument("--early-steps", type=int, default=None, help="also the early-training signals after N steps")
    parser.add_argument("--versus", type=Path, nargs=2, action="append", default=[], metavar=("PLAIN", "PREDICTOR"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    result = {"command": "python experiments/predictor_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "runs": [study_run(run, args.early_steps) for run in args.runs],
              "versus": [versus(plain, ranked) for plain, ranked in args.versus],
              "load_average_before": load_before, "load_average_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        print(run["run"], {name: (s["within_generation_mean"], s["pooled"]) for name, s in run["signals"].items()})
    for pair in result["versus"]:
        print(json.dumps(pair))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
