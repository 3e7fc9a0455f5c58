"""Retrain length on real text: hand-picked genomes retrained side by side for several epoch counts.

Command (about 10 minutes on a quiet 2-core CPU; RUN is any finished search on the dataset, for its data and
tokenizer, e.g. the run that `experiments/budget_run.py --dataset mr` leaves in WORK/run):
    python experiments/retrain_length.py --run /tmp/mr-budget30/run --work /tmp/retrain-length \\
        --out experiments/results/retrain_length_mr.json

For each epoch count, a copy of RUN whose history holds only `CANDIDATES` (in a space with widths up to 128 and
dropout up to 0.5, so that the Kim (2014) CNN shape, one convolution of width 128, max pooling, dropout 0.5, is one
of them) is retrained by `evonas.retrain.retrain` with `--top-k 8 --seeds N --epochs E`: every genome and seed in
one population, scored on validation every 1/12 of the steps, each keeping its best validation step. It is the
rule `evonas retrain` follows; only the epoch count differs. Test accuracy is read, never used to pick.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from evonas import retrain as retrain_lib
from evonas import run_dir
from evonas.space import text_classifier_space

SPACE = text_classifier_space(max_blocks=2, widths=(32, 64, 128), dropouts=(0.0, 0.2, 0.5))
BASE = {"num_blocks": 1, "block0_activation": "relu", "block0_norm": "none", "block1_op": "identity",
        "block1_activation": "relu", "block1_norm": "none", "heads": 4, "ffn_expansion": 1, "positional": "none",
        "weight_decay": 0.01, "optimizer": "adamw"}
CANDIDATES = [
    {"block0_op": "conv3", "width": 128, "dropout": 0.5, "pooling": "max", "learning_rate": 0.001},  # Kim's shape
    {"block0_op": "conv5", "width": 128, "dropout": 0.5, "pooling": "max", "learning_rate": 0.001},
    {"block0_op": "identity", "width": 128, "dropout": 0.0, "pooling": "mean", "learning_rate": 0.003},  # a bag
    {"block0_op": "identity", "width": 64, "dropout": 0.0, "pooling": "max", "learning_rate": 0.003},
    {"block0_op": "conv3", "width": 64, "dropout": 0.2, "pooling": "mean", "learning_rate": 0.001},
    {"block0_op": "attention", "width": 32, "dropout": 0.2, "pooling": "mean", "learning_rate": 0.003,
     "block0_activation": "tanh"},  # the MR --budget 10 search's winner
    {"block0_op": "gru", "width": 64, "dropout": 0.2, "pooling": "max", "learning_rate": 0.003},
    {"block0_op": "conv3", "width": 128, "dropout": 0.5, "pooling": "max", "learning_rate": 0.003,
     "weight_decay": 0.0001},
]
# What retrain reads of a run, but the history (the candidates' own), and summary.json, which marks it finished.
RUN_FILES = (*(name for name in retrain_lib.RUN_FILES if name != "history.jsonl"), run_dir.SUMMARY)


def history_lines(space=SPACE, candidates=CANDIDATES, base=BASE) -> list[str]:
    """History records of the candidates, fitness decreasing in list order, so `--top-k` keeps that order."""
    return [json.dumps({"id": i, "generation": 0, "genome": space.encode(base | c).tolist(), "parents": [],
                        "fitness": 1.0 - i / 100, "val_accuracy": 0.0, "diverged": False})
            for i, c in enumerate(candidates)]


def candidates_run(run: Path, work: Path, space=SPACE, candidates=CANDIDATES, base=BASE) -> Path:
    """A copy of `run`'s data files with the candidates' space and history (`history_lines`)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy(run / name, work / name)
    saved = json.loads((work / "config.json").read_text())
    (work / "config.json").write_text(json.dumps(saved | {"space": space.to_json()}))
    (work / "history.jsonl").write_text("\n".join(history_lines(space, candidates, base)) + "\n")
    return work


def retrain_candidates(run: Path, work: Path, seeds: int, space=SPACE, candidates=CANDIDATES, base=BASE,
                       epochs: float | None = None):
    """The candidates retrained side by side in a `candidates_run` of `run` (`--top-k` all of them, `seeds` each,
    `--epochs`, each keeping its best validation step, no `--refit`): the results of `evonas.retrain.retrain`, and per
    candidate its validation and test accuracies and best steps."""
    results = retrain_lib.retrain(candidates_run(run, work, space, candidates, base), top_k=len(candidates),
                                  num_seeds=seeds, epochs=epochs, refit=False, progress=False).results
    rows = [{"candidate": c, "validation_accuracies": g["validation_accuracies"], "test_accuracies": g["test_accuracies"],
             "best_steps": g["best_steps"]} for c, g in zip(candidates, results["genomes"])]
    return results, rows


def study_parser(doc: str, work: str, out: str) -> argparse.ArgumentParser:
    """The options of a study that retrains hand-picked candidates on a finished run's data."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished search run on the dataset")
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser


def save_study(args: argparse.Namespace, results: dict, rows: list[dict], start: float, **extra) -> None:
    """A study's JSON at `args.out`: its run, seeds, retrain steps, rows, `extra` and wall time since `start`."""
    args.out.write_text(json.dumps({"run": str(args.run), "seeds": args.seeds, "steps": results["steps"],
                                    "eval_every": results["eval_every"], "rows": rows, **extra,
                                    "wall_seconds": time.perf_counter() - start}, indent=2) + "\n")


def print_rows(rows: list[dict], genes: tuple[str, ...]) -> None:
    """One line per retrained candidate: the `genes` that tell it apart, mean validation and test accuracy."""
    for r in rows:
        label = " ".join(f"{gene}={r['candidate'][gene]}" for gene in genes)
        print(f"{label}: validation {np.mean(r['validation_accuracies']):.4f}, test "
              f"{np.mean(r['test_accuracies']):.4f} ± {np.std(r['test_accuracies'], ddof=1):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished search run on the dataset")
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrain-length"))
    parser.add_argument("--epochs", type=float, nargs="+", default=[4.0, 12.0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/retrain_length_mr.json"))
    args = parser.parse_args()
    rows = []
    for epochs in args.epochs:
        start = time.perf_counter()
        results, genomes = retrain_candidates(args.run, args.work / f"epochs{epochs:g}", args.seeds, epochs=epochs)
        rows.append({"epochs": epochs, "steps": results["steps"], "eval_every": results["eval_every"],
                     "wall_seconds": time.perf_counter() - start, "genomes": genomes,
                     "mean_validation": float(np.mean([g["validation_accuracies"] for g in genomes])),
                     "mean_test": float(np.mean([g["test_accuracies"] for g in genomes]))})
        print(f"{epochs:g} epochs ({results['steps']} steps): validation {rows[-1]['mean_validation']:.4f}, "
              f"test {rows[-1]['mean_test']:.4f} (mean over {len(CANDIDATES)} genomes x {args.seeds} seeds), "
              f"{rows[-1]['wall_seconds']:.0f} s")
    args.out.write_text(json.dumps({"run": str(args.run), "seeds": args.seeds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
