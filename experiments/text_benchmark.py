"""A real result on real text: import a dataset, search it, retrain the best genome with several seeds.

Command:
    python experiments/text_benchmark.py --config sst2|mr [--smoke] [--out DIR] [--results FILE] [--data DIR]

`--config NAME` reads `experiments/configs/NAME.py`: `get_benchmark(arg)` for the import and the retrain, and
`get_config(arg)` for the search (the config `evonas search --config` takes), with `arg` 'smoke' for `--smoke`; its
docstring gives the full command, the expected runtime and the expected result. The steps:

1. import the files from `--data` (default `../shared/data` beside the repository) with `evonas data import`'s
   `import_files` into `OUT/data`; `--smoke` imports only the first `smoke_lines` lines of every file;
2. `run_search` into `OUT/search` (a finished search there, with the same config, is reused);
3. `retrain` the best genome with `num_seeds` seeds; it writes `OUT/search/retrain/results.json` and the model;
4. write the results JSON (`--results`, default `OUT/results.json`): test accuracy mean ± std over the seeds,
   the found architecture, the search's best validation accuracy, wall times, the load average, the md5 of
   every evonas module and the equivalent `evonas` commands (with `OUT/search_config.json`).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent
CONFIGS = EXPERIMENTS / "configs"
SHARED_DATA = EXPERIMENTS.parent.parent / "shared" / "data"  # ../shared/data seen from the repository root


def load_config(name: str, smoke: bool) -> dict:
    """`experiments/configs/NAME.py`'s `get_benchmark` (import, retrain) with its `get_config` as "search"."""
    from evonas.config_files import load_python_config

    known = sorted(path.stem for path in CONFIGS.glob("*.py") if "def get_benchmark(" in path.read_text())
    if name not in known:
        raise ValueError(f"unknown config {name!r}; experiments/configs has {known}")
    spec = f"{CONFIGS / name}.py" + (":smoke" if smoke else "")
    return {**load_python_config(spec, "get_benchmark"), "search": load_python_config(spec)}


def source_files(config: dict, data_root: Path, subset_dir: Path) -> dict[str, list[str]]:
    """Each split's file specs resolved under `data_root`; with `smoke_lines`, copies of their first lines."""
    files = {}
    for split, specs in config["import"]["files"].items():
        files[split] = []
        for spec in specs:
            label, _, relative = spec.rpartition("=")
            path = data_root / relative
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist; --data must name the shared data directory")
            if config["smoke_lines"] is not None:
                path = head_copy(path, config["smoke_lines"], subset_dir / split / relative)
            files[split].append(f"{label}={path}" if label else str(path))
    return files


def head_copy(path: Path, num_lines: int, target: Path) -> Path:
    """Writes the first `num_lines` lines of `path` (bytes unchanged, so the encoding stays) to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as source:
        target.write_bytes(b"".join(line for _, line in zip(range(num_lines), source)))
    return target


def evonas_md5() -> dict[str, str]:
    """The md5 of every evonas module, since results depend on code that changes often."""
    import evonas

    package = Path(evonas.__file__).parent
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(package.glob("*.py"))}


def commands(config: dict, files: dict[str, list[str]], data_dir: Path, run_dir: Path, search_file: Path) -> list[str]:
    """The `evonas` command lines that do what this run does; `search_file` holds the search settings."""
    spec = config["import"]
    parts = [f"evonas data import --name {config['name']} --data-dir {data_dir} --format {spec['file_format']}"]
    parts += [f"--text-column {column}" for column in spec.get("text_columns", [])]
    parts += [f"--label-column {spec['label_column']}"] if "label_column" in spec else []
    parts += [f"--encoding {spec['encoding']}"] if "encoding" in spec else []
    parts += [f"--{split} {path}" for split, paths in files.items() for path in paths]
    retrain = config["retrain"]
    return [
        " ".join(parts),
        f"evonas search --dataset {config['name']} --data-dir {data_dir} --out {run_dir} --config {search_file}",
        f"evonas retrain {run_dir} --top-k {retrain['top_k']} --seeds {retrain['num_seeds']} --steps {retrain['steps']}",
    ]


def run(name: str, out: Path, data_root: Path = SHARED_DATA, smoke: bool = False, progress: bool = True) -> dict:
    """Imports, searches and retrains as the config says; returns the results (also written by `main`)."""
    from evonas.retrain import retrain
    from evonas.search import SearchConfig, run_search
    from evonas.text_files import import_files

    config = load_config(name, smoke)
    load_before = os.getloadavg()
    start = time.perf_counter()
    data_dir, run_dir = out / "data", out / "search"
    files = source_files(config, data_root, out / "subset")
    spec = {key: value for key, value in config["import"].items() if key != "files"}
    import_files(config["name"], data_dir, files, overwrite=True, **spec)
    imported = time.perf_counter()

    search_values = {**config["search"], "dataset": config["name"], "data_dir": str(data_dir)}
    search_config = SearchConfig.from_dict(search_values)
    search_file = out / "search_config.json"  # what `evonas search --config` takes
    search_file.write_text(json.dumps(search_values, indent=2) + "\n")
    summary = finished_summary(run_dir, search_config)
    if summary is None:
        summary = run_search(search_config, run_dir, progress=progress, overwrite=True)  # an unfinished or other run
    searched = time.perf_counter()
    retrained = retrain(run_dir, progress=progress, **config["retrain"]).results
    end = time.perf_counter()

    best = retrained["genomes"][0]
    return {
        "config": name,
        "smoke": smoke,
        "test_split": config["test_split"],
        "test_accuracy_mean": retrained["test_accuracy_mean"],
        "test_accuracy_std": retrained["test_accuracy_std"],
        "test_accuracies": retrained["test_accuracies"],
        "validation_accuracies": retrained["validation_accuracies"],
        "seeds": retrained["seeds"],
        "retrain_steps": retrained["steps"],
        "architecture": retrained["architecture"],
        "genome": retrained["genome"],
        "params": best["params"],
        "search": {key: summary[key] for key in ("best_id", "best_val_accuracy", "first_generation_median_val_accuracy",
                                                 "children", "diverged", "generations", "compilations")},
        "search_config": dataclasses.asdict(search_config),
        "wall_seconds": {"import": imported - start, "search": summary["wall_seconds"],
                         "search_and_load": searched - imported, "retrain": end - searched, "total": end - start},
        "load_average": {"start": list(load_before), "end": list(os.getloadavg())},
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "evonas_md5": evonas_md5(),
        "commands": commands(config, files, data_dir, run_dir, search_file),
    }


def finished_summary(run_dir: Path, config) -> dict | None:
    """The summary of a search already finished in `run_dir` with the same config, so a rerun only retrains."""
    if not (run_dir / "summary.json").is_file() or not (run_dir / "config.json").is_file():
        return None
    if json.loads((run_dir / "config.json").read_text())["config"] != json.loads(json.dumps(dataclasses.asdict(config))):
        return None
    return json.loads((run_dir / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a file name in experiments/configs, without .py")
    parser.add_argument("--smoke", action="store_true", help="a tiny subset and a tiny search: the CI run")
    parser.add_argument("--out", type=Path, help="working directory (default: runs/CONFIG, or runs/CONFIG-smoke)")
    parser.add_argument("--results", type=Path, help="the results JSON (default: OUT/results.json)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    out = args.out or Path("runs") / (args.config + ("-smoke" if args.smoke else ""))
    try:
        results = run(args.config, out, args.data, smoke=args.smoke, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as error:
        print(f"text_benchmark: {error}", file=sys.stderr)
        return 2
    path = args.results or out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    std = results["test_accuracy_std"]
    spread = f"± {std:.4f} over {len(results['seeds'])} seeds" if std is not None else "(one seed: std undefined)"
    print(f"{args.config}: test accuracy {results['test_accuracy_mean']:.4f} {spread}; "
          f"total {results['wall_seconds']['total']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
