"""The speed floor of `evonas replay`: 10,000 searches of 100 evaluations on a 15,625-row table in under 10 s,
compilation included, on a 2-core CPU.

    python experiments/synthetic_tables.py --out experiments/tables
    python experiments/replay_benchmark.py --out experiments/results/replay_benchmark.json

Each strategy is timed in a fresh process (`evonas replay`, JAX's persistent compilation cache switched off, so
every run compiles), from the command's start to its JSON, and the command's own `seconds` (table read, compile,
run) is kept too. Takes a few seconds per strategy (CMA-ES, left out by default, minutes).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# CMA-ES is left out by default: its batched 6x6 eigendecompositions make 10,000 searches take minutes.
STRATEGIES = ("evolution", "random", "ga")


def time_replay(table: str, strategy: str, evaluations: int, seeds: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "replay.json"
        environment = {**os.environ, "JAX_COMPILATION_CACHE_DIR": "", "JAX_ENABLE_COMPILATION_CACHE": "false"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "evonas.cli", "replay", "--table", table, "--metric", "score",
                        "--evaluations", str(evaluations), "--seeds", str(seeds), "--strategy", strategy,
                        "--out", str(out)], check=True, env=environment, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        result = json.loads(out.read_text())
    return {"strategy": strategy, "process_seconds": wall, "replay_seconds": result["seconds"],
            "best_mean": result["best_mean"], "found_max_share": result["found_max_share"],
            "rows": result["rows"], "settings": result["settings"]}


def _commit() -> str | None:
    """The source tree's git commit, with "+dirty" if it has uncommitted changes; None outside git."""
    def git(*args):
        return subprocess.run(["git", *args], check=False, capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if commit else None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("jax", "jaxlib", "evosax")} | {"python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="experiments/tables/structured.csv")
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--out", default="experiments/results/replay_benchmark.json")
    args = parser.parse_args()
    runs = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for strategy in args.strategies.split(","):
        runs.append(time_replay(args.table, strategy, args.evaluations, args.seeds))
        print(f"{strategy:9s} {runs[-1]['replay_seconds']:5.1f} s in replay, {runs[-1]['process_seconds']:5.1f} s "
              f"with the process start; floor 10 s", flush=True)
        load = os.getloadavg()  # other work on the machine slows compilation most
        Path(args.out).write_text(json.dumps({
            "table": args.table, "evaluations": args.evaluations, "seeds": args.seeds, "floor_seconds": 10.0,
            "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "load_average": load,
            "commit": _commit(), "versions": _versions(),
            "runs": runs}, indent=1))
    print(f"wrote {args.out} (load average {load[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
