"""`evonas ablate CONFIG.py[:ARG]`: a grid of search settings x seeds, one ordinary search run per cell and seed.

The config module declares two functions (evonas.config_files loads them; ARG is passed to both):

- `get_config(arg=None)`: the base search config, the keys of `evonas search --config`, shared by every run;
- `get_ablation(arg=None)`: `{"grid": {option: [values, ...], ...}, "seeds": [0, 1, ...], "metric": ...}`.
  The cells are every combination of the grid's values (the first option varies slowest); the first cell
  (each option's first value) is the reference the others are tested against. `metric` is a number of
  summary.json, `best_val_accuracy` by default. Instead of a grid, `"cells": [{option: value, ...}, ...]`
  lists the cells themselves, e.g. a plain search, each component alone, and all together: an option a cell
  leaves out takes the base config's value (or its default).

Each run is `run_search` into OUT/CELL/seedN, where CELL names the settings (`strategy=random,crossover_rate=0`;
a list or dict value is named by its index in the grid). Runs go seed by seed, every cell for a seed before the
next seed, so a stopped ablation has paired results. A rerun skips every finished run (it has a summary.json)
and resumes an unfinished one from its checkpoint. Then it writes OUT/results.csv, OUT/results.md and
OUT/results.json (per cell: the metric's mean and sample sd over seeds, n, the mean paired difference from the
first cell and a paired t-test over the seeds both have, mean seconds per run) and each cell's report of its
seeds overlaid (OUT/CELL/report.html, evonas.report).
"""

import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from evonas import run_dir as run_dirs
from evonas.config_files import load_python_config, split_spec
from evonas.errors import ConfigError, RunDirError
from evonas.options import SearchConfig, check_config_values

METRICS = ("best_val_accuracy", "first_generation_median_val_accuracy", "best_params", "diverged", "compilations",
           "wall_seconds", "train_steps")  # the numbers of summary.json a table may compare
ABLATION_KEYS = {"grid", "cells", "seeds", "metric"}
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Ablation:
    """What a config module declares: the shared search values, the grid, the seeds and the metric."""

    base: dict[str, Any]  # checked SearchConfig values (the seed aside) that every run shares
    grid: dict[str, list[Any]]  # option -> the values it takes; {} is a single cell, the base
    seeds: list[int]
    metric: str = "best_val_accuracy"
    listed: list[dict[str, Any]] | None = None  # get_ablation()'s "cells", each with every option of the grid

    def cells(self) -> list[dict[str, Any]]:
        """The listed cells, or every combination of the grid's values (the first option varying slowest)."""
        if self.listed is not None:
            return [dict(cell) for cell in self.listed]
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def cell_name(self, cell: dict[str, Any]) -> str:
        """The cell's directory name: `option=value,...` (a list or dict value by its index), `base` if no grid."""
        parts = [f"{name}={_scalar_name(value) if _is_scalar(value) else self.grid[name].index(value)}"
                 for name, value in cell.items()]
        return ",".join(parts) or "base"

    def config(self, cell: dict[str, Any], seed: int) -> SearchConfig:
        """The cell's config, with what the data and a budget decide as `evonas search` resolves it."""
        from evonas.budget import resolve_values

        return SearchConfig(**resolve_values({**self.base, **cell, "seed": seed}))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar_name(value: Any) -> str:
    return str(value).replace("/", "_")


def load_ablation(spec: str) -> Ablation:
    """The ablation that `spec` (`FILE.py[:ARG]`) declares, every run's config checked before anything runs.

    Raises:
        ConfigError: one line naming the file and what is wrong with its grid, seeds, metric or a cell's config.
    """
    if split_spec(spec) is None:
        raise ConfigError(f"CONFIG {spec} must be a Python file, FILE.py or FILE.py:ARG")
    where = f"CONFIG {split_spec(spec)[0]}"
    base = check_config_values(load_python_config(spec, label="CONFIG"), where)
    declared = load_python_config(spec, "get_ablation", label="CONFIG")
    if unknown := sorted(set(declared) - ABLATION_KEYS):
        raise ConfigError(f"{where}: get_ablation() has unknown keys {unknown}; known are {sorted(ABLATION_KEYS)}")
    if "grid" in declared and "cells" in declared:
        raise ConfigError(f"{where}: get_ablation() gives both 'grid' and 'cells'; give one of them")
    listed = _cells(declared["cells"], base, where) if "cells" in declared else None
    grid = _grid(declared.get("grid", {}), where) if listed is None else _columns(listed)
    ablation = Ablation(base, grid, _seeds(declared.get("seeds"), where), declared.get("metric", "best_val_accuracy"),
                        listed)
    if ablation.metric not in METRICS:
        raise ConfigError(f"{where}: metric must be one of {', '.join(map(repr, METRICS))}, got {ablation.metric!r}")
    for cell in ablation.cells():
        try:
            ablation.config(cell, ablation.seeds[0])
        except ConfigError as error:
            raise ConfigError(f"{where}: cell {ablation.cell_name(cell)}: {error}") from None
    return ablation


def _grid(grid: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid must be a dict of option -> list of values, got {type(grid).__name__}")
    if "seed" in grid:
        raise ConfigError(f"{where}: grid cannot vary 'seed'; the seeds are get_ablation()'s 'seeds'")
    checked = {}
    for name, values in grid.items():
        _check_option(name, f"{where}: grid option")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid {name} must be a non-empty list of values, got {values!r}")
        checked[name] = [SearchConfig.OPTIONS[name].check(value, f"{where}: grid {name}") for value in values]
        if len({json.dumps(value, sort_keys=True) for value in checked[name]}) < len(values):
            raise ConfigError(f"{where}: grid {name} repeats a value: {values!r}")
    return checked


def _check_option(name: str, where: str) -> None:
    if name not in SearchConfig.OPTIONS:
        raise ConfigError(f"{where} {name!r} is not a config key; known keys are {sorted(SearchConfig.OPTIONS)}")


def _cells(cells: Any, base: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The listed cells checked, each given every option that any cell sets (the base's value, or the default)."""
    if not isinstance(cells, list) or not cells or not all(isinstance(cell, dict) for cell in cells):
        raise ConfigError(f"{where}: cells must be a non-empty list of dicts of option -> value, got {cells!r}")
    names = list(dict.fromkeys(name for cell in cells for name in cell))
    if "seed" in names:
        raise ConfigError(f"{where}: cells cannot set 'seed'; the seeds are get_ablation()'s 'seeds'")
    for name in names:
        _check_option(name, f"{where}: cells option")
    default = SearchConfig()
    unset = {name: base[name] if name in base else getattr(default, name) for name in names}
    checked = [{name: SearchConfig.OPTIONS[name].check(cell[name], f"{where}: cells {name}") if name in cell
                else unset[name] for name in names} for cell in cells]
    if len({json.dumps(cell, sort_keys=True) for cell in checked}) < len(checked):
        raise ConfigError(f"{where}: cells repeat a cell: {cells!r}")
    return checked


def _columns(cells: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each option's distinct values over the cells, in order: the table's columns and the cells' names."""
    columns: dict[str, list[Any]] = {name: [] for name in cells[0]}
    for cell in cells:
        for name, value in cell.items():
            if value not in columns[name]:
                columns[name].append(value)
    return columns


def _seeds(seeds: Any, where: str) -> list[int]:
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where}: get_ablation() must give 'seeds', a non-empty list of integers, got {seeds!r}")
    checked = [SearchConfig.OPTIONS["seed"].check(seed, f"{where}: seeds") for seed in seeds]
    if len(set(checked)) < len(checked):
        raise ConfigError(f"{where}: seeds repeat a seed: {seeds!r}")
    return checked


def run_ablation(ablation: Ablation, out: str | Path, progress: bool = False, reports: bool = True) -> dict[str, Any]:
    """Runs (or resumes) every cell and seed into `out`, then writes the results table and the cells' reports.

    Returns:
        The results that results.json holds, with `executed`: how many runs were run afresh, resumed and skipped.
    """
    from evonas.search import run_search

    out = Path(out)
    cells = ablation.cells()
    executed = {"ran": 0, "resumed": 0, "skipped": 0}
    load_before = os.getloadavg()
    summaries = {}
    for n, (seed, cell) in enumerate(itertools.product(ablation.seeds, cells), start=1):
        path = out / ablation.cell_name(cell) / f"seed{seed}"
        config = ablation.config(cell, seed)
        status = _status(path, config)
        summaries[ablation.cell_name(cell), seed] = (
            json.loads((path / run_dirs.SUMMARY).read_text()) if status == "skipped"
            else run_search(config, path, progress=progress, resume=status == "resumed"))
        executed[status] += 1
        value = summaries[ablation.cell_name(cell), seed][ablation.metric]
        logger.info(f"[{n}/{len(cells) * len(ablation.seeds)}] {path}: {status}, {ablation.metric} {value}")
    rows = table_rows(ablation, summaries)
    results = {"base": ablation.base, "grid": ablation.grid, "seeds": ablation.seeds, "metric": ablation.metric,
               **({} if ablation.listed is None else {"cells": ablation.listed}), "rows": rows, "executed": executed,
               "load_average": {"start": list(load_before), "end": list(os.getloadavg())}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.csv").write_text(csv_table(ablation, rows))
    (out / "results.md").write_text(markdown_table(ablation, rows))
    if reports:
        from evonas.report import write_report

        for cell in cells:
            name = ablation.cell_name(cell)
            write_report([out / name / f"seed{seed}" for seed in ablation.seeds], out / name / "report.html")
    return results


def _status(path: Path, config: SearchConfig) -> str:
    """'skipped' (finished with this config), 'resumed' (started, unfinished) or 'ran' (not started)."""
    from evonas.search import config_conflicts, load_run_config

    if not (path / run_dirs.CONFIG).is_file():
        return "ran"
    if conflicts := config_conflicts(load_run_config(path), dataclasses.asdict(config)):
        raise RunDirError(f"{path} holds a run of another config ({'; '.join(conflicts)}); give another --out, or "
                          "remove it")
    return "skipped" if run_dirs.is_finished(path) else "resumed"


def table_rows(ablation: Ablation, summaries: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: its settings, the metric per seed, mean, sample sd, the paired test against the first cell and
    seconds. A run with no value (every child diverged) is left out of its cell's n."""
    names = [ablation.cell_name(cell) for cell in ablation.cells()]
    values = {name: {seed: _number(summaries[name, seed][ablation.metric]) for seed in ablation.seeds
                     if (name, seed) in summaries} for name in names}
    rows = []
    for cell, name in zip(ablation.cells(), names):
        finite = [v for v in values[name].values() if not math.isnan(v)]
        seconds = [summaries[name, seed]["wall_seconds"] for seed in values[name]]
        steps = [summaries[name, seed].get("train_steps") for seed in values[name]]  # the compute each run spent
        steps = [] if None in steps else steps  # runs written before summaries counted their steps
        shared = [s for s in ablation.seeds if not math.isnan(values[name].get(s, math.nan))
                  and not math.isnan(values[names[0]].get(s, math.nan))]
        difference, p_value = _paired([values[name][s] for s in shared], [values[names[0]][s] for s in shared])
        rows.append({"cell": name, "settings": cell, "values": {str(s): v for s, v in values[name].items()},
                     "n": len(finite), "mean": float(np.mean(finite)) if finite else None,
                     "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                     "difference": None if name == names[0] else difference,
                     "p_value": None if name == names[0] else p_value, "pairs": len(shared),
                     "seconds": float(np.mean(seconds)) if seconds else None,
                     "train_steps": float(np.mean(steps)) if steps else None})
    return rows


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _paired(values: list[float], reference: list[float]) -> tuple[float | None, float | None]:
    """The mean of `values - reference` and the two-sided paired t-test's p (None under two pairs, or undefined)."""
    if not values:
        return None, None
    difference = float(np.mean(np.subtract(values, reference)))
    if len(values) < 2:
        return difference, None
    from scipy import stats

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # identical differences: t is infinite or undefined
        p_value = float(stats.ttest_rel(values, reference).pvalue)
    return difference, None if math.isnan(p_value) else p_value


def csv_table(ablation: Ablation, rows: list[dict[str, Any]]) -> str:
    """One line per cell: the grid's options, n, the metric's mean and sd, the paired test, seconds and train
    steps per run."""
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    columns = ["n", f"{ablation.metric}_mean", f"{ablation.metric}_sd", "difference_from_first", "p_paired_t",
               "pairs", "seconds_per_run", "train_steps_per_run"]
    writer.writerow(["cell", *ablation.grid, *columns])
    for row in rows:
        settings = [json.dumps(v) if not _is_scalar(v) else v for v in row["settings"].values()]
        writer.writerow([row["cell"], *settings, row["n"], *("" if row[k] is None else row[k] for k in
                                                              ("mean", "sd", "difference", "p_value")),
                         row["pairs"], *("" if row[k] is None else row[k] for k in ("seconds", "train_steps"))])
    return stream.getvalue()


def markdown_table(ablation: Ablation, rows: list[dict[str, Any]]) -> str:
    """The table for a paper or a README, numbers rounded; the first row is the reference of the tests."""
    header = ["cell", "n", f"{ablation.metric} (mean ± sd)", "difference from row 1", "p (paired t)",
              "seconds per run", "train steps per run"]
    lines = ["| " + " | ".join(header) + " |", "|---|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        spread = "" if row["sd"] is None else f" ± {row['sd']:.4f}"
        mean = "—" if row["mean"] is None else f"{row['mean']:.4f}{spread}"
        difference = "—" if row["difference"] is None else f"{row['difference']:+.4f}"
        p_value = "—" if row["p_value"] is None else f"{row['p_value']:.3g} ({row['pairs']} seeds)"
        seconds = "—" if row["seconds"] is None else f"{row['seconds']:.0f}"
        steps = "—" if row["train_steps"] is None else f"{row['train_steps']:,.0f}"
        lines.append(f"| {row['cell']} | {row['n']} | {mean} | {difference} | {p_value} | {seconds} | {steps} |")
    return "\n".join(lines) + "\n"
