"""Aging evolution's settings for small budgets, then every strategy at equal budget, on the synthetic tables.

    python experiments/synthetic_tables.py --out experiments/tables
    python experiments/strategy_study.py --seeds 1000 --out experiments/results/strategy_study.json

About 20 minutes on a busy 2-core CPU (each replay compiles for a few seconds, then runs 1,000 searches in about
one). Each row is `evonas replay` on one table at one budget: mean ± sd of the best score found per seed, and the
share of seeds that found the table's maximum. `--smoke` runs two settings on one table with 20 seeds.
"""

import argparse
import json
from pathlib import Path

from evonas.replay import REPLAY_DEFAULTS, replay_table

TABLES = ("structured", "smooth", "deceptive")
BUDGETS = (100, 200)
# Aging evolution: population and tournament size, per-gene mutation rate (0: exactly one gene moves), crossover.
TUNING = [{"population_size": p, "sample_size": s, "mutation_rate": m, "crossover_rate": 0.0}
          for p, s in ((5, 2), (10, 3), (20, 5)) for m in (0.0, 0.2)]
TUNING += [{"population_size": 10, "sample_size": 3, "mutation_rate": 0.0, "crossover_rate": 0.5}]


def run(table_dir: Path, strategy: str, settings: dict, seeds: int, tables=TABLES) -> list[dict]:
    rows = []
    for table in tables:
        for budget in BUDGETS:
            result = replay_table(str(table_dir / f"{table}.csv"), "score", None, budget, seeds, strategy, settings)
            rows.append({"table": table, "evaluations": budget, "strategy": strategy, "settings": result["settings"],
                         "best_mean": result["best_mean"], "best_std": result["best_std"],
                         "found_max_share": result["found_max_share"], "short": result["short"],
                         "seconds": result["seconds"]})
            print(f"{table:10s} {budget:4d} {strategy:9s} {json.dumps(settings):90s} {result['best_mean']:.4f} ± "
                  f"{result['best_std']:.4f}  found {result['found_max_share']:.3f}  {result['seconds']:.1f} s",
                  flush=True)
    return rows


def label(part: str, row: dict) -> str:
    if part == "comparison":
        return row["strategy"]
    return "P={population_size} S={sample_size} m={mutation_rate} c={crossover_rate}".format(**row["settings"])


def markdown(results: dict) -> str:
    """The comparison and tuning tables as Markdown: best score mean ± sd (share of seeds finding the maximum)."""
    lines = []
    for part in ("comparison", "tuning"):
        rows = {(label(part, r), r["table"], r["evaluations"]): r for r in results[part]}
        columns = sorted({key[1:] for key in rows}, key=lambda c: (TABLES.index(c[0]), c[1]))
        lines += [f"| {part} | " + " | ".join(f"{t} {n}" for t, n in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name in dict.fromkeys(key[0] for key in rows):
            cells = [rows.get((name, *column)) for column in columns]
            lines.append(f"| {name} | " + " | ".join(
                f"{r['best_mean']:.4f} ± {r['best_std']:.4f} ({r['found_max_share']:.3f})" if r else "" for r in cells)
                + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default="experiments/tables")
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--out", default="experiments/results/strategy_study.json")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--markdown", metavar="FILE.json", help="only print the tables of an earlier study")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    table_dir, tables = Path(args.tables), TABLES[:1] if args.smoke else TABLES
    results = {"seeds": args.seeds, "tuning": [], "comparison": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for settings in TUNING[:2] if args.smoke else TUNING:
        results["tuning"] += run(table_dir, "evolution", settings, args.seeds, tables)
        out.write_text(json.dumps(results, indent=1))  # after every setting, so a stopped study keeps its rows
    for name in REPLAY_DEFAULTS:  # each strategy with the defaults `evonas replay` uses
        results["comparison"] += run(table_dir, name, {}, args.seeds, tables)
        out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
