"""Issue 21's hurdle floor on an `evonas ablate` directory: per seed, the train steps a cell's search had spent
when its best-so-far first reached the plain cell's best, against the plain search's total steps.

Command (after `evonas ablate experiments/configs/hurdles_mr.py --out runs/hurdles_mr`):
    python experiments/reach_plain_best.py runs/hurdles_mr --plain "hurdle_steps=None,inherit=False" \\
        --out experiments/results/hurdles_mr_reach.json

Every other cell directory is compared with the plain one, seed by seed (`seedN` in each). A search reaches the
target after the first generation whose best-so-far is at least as high, having spent the steps of its children
so far (history.jsonl's per-child `steps`: hurdles stop children early); the floor is at most half the plain
search's steps. Prints a table and writes JSON.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from hurdles_study import reach, read_history


def seconds_by_generation(run_dir: Path) -> list[float]:
    lines = (run_dir / "generations.jsonl").read_text().splitlines()
    return [json.loads(line)["wall_seconds"] for line in lines]


def compare(ablation: Path, plain: str) -> dict:
    """{cell: [per seed: plain's best and steps, the cell's best, steps and steps to reach plain's best]}."""
    cells = {}
    for cell in sorted(p for p in ablation.iterdir() if p.is_dir() and p.name != plain and (p / "seed0").is_dir()):
        rows = []
        for seed_dir in sorted((ablation / plain).glob("seed*")):
            base, other = read_history(seed_dir), read_history(cell / seed_dir.name)
            steps = json.loads((seed_dir / "config.json").read_text())["config"]["steps"]
            target = max(r["fitness"] for r in base if r["fitness"] is not None)
            plain_steps = sum(r.get("steps", steps) for r in base)
            reached, seconds = reach(other, steps, target, seconds_by_generation(cell / seed_dir.name))
            rows.append({"seed": seed_dir.name, "plain_best": target, "plain_steps": plain_steps,
                         "best": max(r["fitness"] for r in other if r["fitness"] is not None),
                         "steps": sum(r.get("steps", steps) for r in other), "steps_to_reach_plain_best": reached,
                         "seconds_to_reach_plain_best": seconds,
                         "meets_floor": reached is not None and reached <= plain_steps / 2})
        cells[cell.name] = rows
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ablation", type=Path, help="an `evonas ablate` output directory")
    parser.add_argument("--plain", required=True, help="the plain cell's directory name")
    parser.add_argument("--out", type=Path, help="JSON output")
    args = parser.parse_args(argv)
    cells = compare(args.ablation, args.plain)
    print("| cell | seed | plain best | best | steps (of plain's) | steps to reach plain's best | floor |")
    print("|---|---|--:|--:|--:|--:|---|")
    for name, rows in cells.items():
        for r in rows:
            reached = "never" if r["steps_to_reach_plain_best"] is None else \
                f"{r['steps_to_reach_plain_best']:,} ({r['steps_to_reach_plain_best'] / r['plain_steps']:.0%})"
            print(f"| {name} | {r['seed']} | {r['plain_best']:.3f} | {r['best']:.3f} | {r['steps']:,} "
                  f"({r['steps'] / r['plain_steps']:.0%}) | {reached} | {'met' if r['meets_floor'] else 'no'} |")
        met = sum(r["meets_floor"] for r in rows)
        print(f"{name}: floor met on {met} of {len(rows)} seeds; mean steps "
              f"{statistics.mean(r['steps'] / r['plain_steps'] for r in rows):.0%} of plain's", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(["python", "experiments/reach_plain_best.py",
                                                             *(argv if argv is not None else sys.argv[1:])]),
                                        "cells": cells}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
