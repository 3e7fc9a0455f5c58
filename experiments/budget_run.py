"""MR, SST-2 or AG News with the real-text defaults and a wall-clock budget: import, `search --budget`, `retrain`, as a
user runs them.

Commands (each about MINUTES + 10 minutes on a 2-core CPU):
    python experiments/budget_run.py --dataset mr --minutes 30 --work /tmp/mr-budget \
        --out experiments/results/mr_budget30.json
    python experiments/budget_run.py --dataset sst2 --minutes 30 --work /tmp/sst2-budget \
        --out experiments/results/sst2_budget30.json

MR's test split is the 10% of each class that `evonas data import` carves; SST-2's is GLUE's dev set. AG News here is
its 7,600-row test file alone, from which train, validation and test are carved as for MR (`cnn_rand.py` gives
the classic baseline on the same splits).

Writes the three commands, their wall times, the load average around each (the machine may be shared), the
search's summary (its budget decision included) and retrain's results.json. The JSON is written after each command;
with `--resume`, the commands already recorded in `--out` are not run again (e.g. a retrain with newer code).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IMPORTS = {  # `evonas data import`'s options after --name and --data-dir
    "mr": ["--format", "lines", "--encoding", "cp1252", "--train", f"neg={SHARED / 'mr' / 'rt-polarity.neg'}",
           "--train", f"pos={SHARED / 'mr' / 'rt-polarity.pos'}"],
    "sst2": ["--format", "tsv", "--text-column", "sentence", "--label-column", "label",
             "--train", str(SHARED / "sst2" / "train.tsv"), "--test", str(SHARED / "sst2" / "dev.tsv")],
    # Only AG News's test file is in shared/data: title and description joined, label from the first column.
    "ag_news": ["--format", "csv", "--no-header", "--text-column", "1", "--text-column", "2", "--label-column", "0",
                "--train", str(SHARED / "ag_news" / "test.csv")],
}


def commands(dataset: str, work: Path, minutes: float) -> list[list[str]]:
    data_dir, run = work / "tfds", work / "run"
    return [
        ["evonas", "data", "import", "--name", dataset, "--data-dir", str(data_dir), *IMPORTS[dataset], "--overwrite"],
        ["evonas", "search", "--dataset", dataset, "--data-dir", str(data_dir), "--budget", f"{minutes:g}",
         "--out", str(run), "--overwrite", "--quiet"],
        ["evonas", "retrain", str(run), "--quiet"],
    ]


def run(command: list[str]) -> dict:
    load_before, start = os.getloadavg(), time.perf_counter()
    launcher = [sys.executable, "-c", "import sys; from evonas.cli import main; sys.exit(main())"]
    subprocess.run([*launcher, *command[1:]], check=True)
    return {"command": " ".join(command), "wall_seconds": time.perf_counter() - start,
            "load_before": list(load_before), "load_after": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(IMPORTS), default="mr")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mr-budget"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results/mr_budget10.json"))
    parser.add_argument("--resume", action="store_true", help="skip the commands already recorded in --out")
    parser.add_argument("--stop-after", choices=("import", "search"), help="stop after this command "
                        "(then `--resume` runs the rest)")
    args = parser.parse_args()
    done = json.loads(args.out.read_text())["steps"] if args.resume and args.out.is_file() else []
    results = {"dataset": args.dataset, "steps": [], "cpus": os.cpu_count()}
    for command in commands(args.dataset, args.work, args.minutes):
        recorded = [step for step in done if step["command"] == " ".join(command)]
        results["steps"].append(recorded[0] if recorded else run(command))
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        if args.stop_after in command[1:3]:
            return
    run_dir = args.work / "run"
    config = json.loads((run_dir / "config.json").read_text())["config"]
    results |= {"config": {k: config[k] for k in ("epochs", "steps", "batch_size", "max_length", "num_children",
                                                  "children_per_generation", "budget_minutes", "space")},
                "summary": json.loads((run_dir / "summary.json").read_text()),
                "retrain": json.loads((run_dir / "retrain" / "results.json").read_text())}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"test accuracy {results['retrain']['test_accuracy_mean']:.4f} ± {results['retrain']['test_accuracy_std']}")


if __name__ == "__main__":
    main()
