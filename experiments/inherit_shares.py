"""Per run of an `evonas ablate experiments/configs/inheritance.py` directory: best validation accuracy, train
steps, seconds, and how much the bred children inherited (history.jsonl's `inherited`).

    python experiments/inherit_shares.py runs/inheritance > experiments/results/inheritance_runs.json
"""

import json
import sys
from pathlib import Path


def run_stats(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    bred = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    shares = [r.get("inherited", 0.0) for r in bred if r["parents"]]
    return {"run": f"{run.parent.name}/{run.name}", "best_val_accuracy": summary["best_val_accuracy"],
            "train_steps": summary["train_steps"], "wall_seconds": summary["wall_seconds"],
            "compilations": summary["compilations"], "bred_children": len(shares),
            "mean_inherited_share": sum(shares) / len(shares) if shares else None,
            "inherited_all": sum(s == 1.0 for s in shares), "inherited_none": sum(s == 0.0 for s in shares)}


def main(root: str) -> None:
    runs = sorted(p.parent for p in Path(root).glob("*/seed*/summary.json"))
    json.dump([run_stats(run) for run in runs], sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
