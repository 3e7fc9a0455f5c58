"""`evonas ablate`: the grid's cells, the results table, and a real ablation that is stopped mid-run and rerun."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evonas import checkpoint
from evonas.ablate import Ablation, csv_table, load_ablation, markdown_table, table_rows
from evonas.cli import main
from evonas.errors import ConfigError
from evonas.search import SearchConfig, run_search

EVOLUTION_VS_RANDOM = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "evolution_vs_random.py"
SPACES = [{"widths": [16]}, {"widths": [16, 32]}]


def test_grid_expands_to_every_combination_with_the_first_option_varying_slowest():
    ablation = Ablation({"steps": 5}, {"strategy": ["evolution", "random"], "crossover_rate": [0.0, 0.5],
                                       "space": SPACES}, seeds=[3, 4])
    cells = ablation.cells()
    assert len(cells) == 8 and cells[0] == {"strategy": "evolution", "crossover_rate": 0.0, "space": SPACES[0]}
    assert cells[1]["space"] == SPACES[1] and cells[2]["crossover_rate"] == 0.5 and cells[4]["strategy"] == "random"
    assert [ablation.cell_name(c) for c in cells[:2]] == ["strategy=evolution,crossover_rate=0.0,space=0",
                                                          "strategy=evolution,crossover_rate=0.0,space=1"]
    config = ablation.config(cells[7], seed=4)
    assert (config.strategy, config.crossover_rate, config.space, config.seed, config.steps) == (
        "random", 0.5, SPACES[1], 4, 5)
    assert Ablation({}, {}, [0]).cells() == [{}] and Ablation({}, {}, [0]).cell_name({}) == "base"


def test_config_module_declares_the_base_grid_and_seeds_checked_like_options(tmp_path):
    (tmp_path / "study.py").write_text(
        "def get_config(arg=None):\n    return {'steps': 5 if arg else 50}\n\n"
        "def get_ablation(arg=None):\n    return {'grid': {'crossover_rate': [0, 1]}, 'seeds': [2, 0]}\n")
    ablation = load_ablation(f"{tmp_path / 'study.py'}:smoke")
    assert ablation.base == {"steps": 5} and ablation.seeds == [2, 0] and ablation.metric == "best_val_accuracy"
    assert ablation.grid == {"crossover_rate": [0.0, 1.0]}  # checked by the option: integers become numbers


def summary(value, seconds=10.0):
    return {"best_val_accuracy": value, "wall_seconds": seconds}


def test_listed_cells_fill_what_they_leave_out_from_the_base_and_the_defaults(tmp_path):
    (tmp_path / "parts.py").write_text(
        "def get_config(arg=None):\n    return {'steps': 100, 'predictor_pool': 2}\n\n"
        "def get_ablation(arg=None):\n    return {'cells': [{}, {'hurdle_steps': [25, 75]}, {'inherit': True},\n"
        "        {'hurdle_steps': 50, 'inherit': True, 'predictor_pool': 4}], 'seeds': [0, 1]}\n")
    ablation = load_ablation(str(tmp_path / "parts.py"))
    assert ablation.cells() == [
        {"hurdle_steps": None, "inherit": False, "predictor_pool": 2},  # the default, the default, the base's
        {"hurdle_steps": (25, 75), "inherit": False, "predictor_pool": 2},
        {"hurdle_steps": None, "inherit": True, "predictor_pool": 2},
        {"hurdle_steps": (50,), "inherit": True, "predictor_pool": 4}]
    assert ablation.grid == {"hurdle_steps": [None, (25, 75), (50,)], "inherit": [False, True], "predictor_pool": [2, 4]}
    assert [ablation.cell_name(c) for c in ablation.cells()] == [
        "hurdle_steps=None,inherit=False,predictor_pool=2", "hurdle_steps=1,inherit=False,predictor_pool=2",
        "hurdle_steps=None,inherit=True,predictor_pool=2", "hurdle_steps=2,inherit=True,predictor_pool=4"]
    assert ablation.config(ablation.cells()[3], seed=1).hurdle_steps == (50,)

    for cells, error in [("[{}, {}]", "cells repeat a cell"), ("[{'seed': 1}]", "cells cannot set 'seed'"),
                         ("[{'inheritt': True}]", "cells option 'inheritt' is not a config key"),
                         ("[{'inherit': 2}]", "cells inherit must be true or false, got 2"), ("{}", "non-empty list")]:
        (tmp_path / "bad.py").write_text(f"def get_config(arg=None):\n    return {{}}\n\n"
                                         f"def get_ablation(arg=None):\n    return {{'cells': {cells}, 'seeds': [0]}}\n")
        with pytest.raises(ConfigError, match=error):
            load_ablation(str(tmp_path / "bad.py"))
    (tmp_path / "both.py").write_text("def get_config(arg=None):\n    return {}\n\ndef get_ablation(arg=None):\n"
                                      "    return {'cells': [{}], 'grid': {'inherit': [True]}, 'seeds': [0]}\n")
    with pytest.raises(ConfigError, match="gives both 'grid' and 'cells'"):
        load_ablation(str(tmp_path / "both.py"))


def test_table_gives_mean_sd_and_a_paired_t_test_against_the_first_row_leaving_out_diverged_runs():
    ablation = Ablation({}, {"strategy": ["evolution", "random"]}, seeds=[0, 1, 2, 3])
    first, second = [0.5, 0.6, 0.55, 0.7], [0.45, 0.5, 0.56, None]  # seed 3's random run: every child diverged
    summaries = {("strategy=evolution", s): summary(v, 10.0 + s) for s, v in enumerate(first)}
    summaries |= {("strategy=random", s): summary(v, 4.0) for s, v in enumerate(second)}
    reference, other = table_rows(ablation, summaries)
    assert reference["n"] == 4 and reference["mean"] == pytest.approx(np.mean(first))
    assert reference["sd"] == pytest.approx(np.std(first, ddof=1)) and reference["seconds"] == pytest.approx(11.5)
    assert reference["p_value"] is None and reference["difference"] is None
    differences = np.subtract(second[:3], first[:3])
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(3))
    assert other["n"] == 3 and other["pairs"] == 3 and other["mean"] == pytest.approx(np.mean(second[:3]))
    assert other["difference"] == pytest.approx(differences.mean())
    assert other["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    rows = list(csv.DictReader(io.StringIO(csv_table(ablation, [reference, other]))))
    assert [r["strategy"] for r in rows] == ["evolution", "random"]
    assert float(rows[1]["p_paired_t"]) == pytest.approx(other["p_value"]) and rows[0]["p_paired_t"] == ""
    lines = markdown_table(ablation, [reference, other]).splitlines()
    assert lines[2].startswith(f"| strategy=evolution | 4 | {np.mean(first):.4f} ± ") and len(lines) == 4


def test_one_seed_has_no_sd_and_no_test():
    ablation = Ablation({}, {"strategy": ["evolution", "random"]}, seeds=[0])
    rows = table_rows(ablation, {("strategy=evolution", 0): summary(0.5), ("strategy=random", 0): summary(0.4)})
    assert rows[1]["sd"] is None and rows[1]["p_value"] is None and rows[1]["difference"] == pytest.approx(-0.1)
    assert "| strategy=random | 1 | 0.4000 | -0.1000 | — |" in markdown_table(ablation, rows)


@pytest.mark.slow
def test_evolution_vs_random_smoke_ablation_stopped_mid_run_resumes_and_skips_finished_runs(tmp_path, monkeypatch,
                                                                                           capsys):
    """2 strategies x 2 seeds of 2 generations; the 3rd run (evolution, seed 1) is stopped after its first
    generation's history is written and before its checkpoint, as Ctrl-C or a kill would."""
    out = tmp_path / "ablation"
    command = ["ablate", f"{EVOLUTION_VS_RANDOM}:smoke", "--out", str(out), "--quiet"]
    save, saves = checkpoint.Checkpoints.save, []

    def save_or_stop(self, progress):
        saves.append(None)
        if len(saves) == 8:  # 3 saves a run (the initial one and 2 generations): the 3rd run's second save
            raise KeyboardInterrupt
        save(self, progress)

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_or_stop)
    assert main(command) == 130
    assert "the same command continues it" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
    runs = {(strategy, seed): out / f"strategy={strategy}" / f"seed{seed}"
            for seed in (0, 1) for strategy in ("evolution", "random")}
    finished = {key: (path / "summary.json").stat().st_mtime_ns for key, path in runs.items()
                if (path / "summary.json").is_file()}
    assert set(finished) == {("evolution", 0), ("random", 0)}
    assert (runs["evolution", 1] / "config.json").is_file() and not (out / "results.csv").exists()

    assert main(command) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["executed"] == {"ran": 1, "resumed": 1, "skipped": 2}
    assert {key: (runs[key] / "summary.json").stat().st_mtime_ns for key in finished} == finished
    summaries = {key: json.loads((path / "summary.json").read_text()) for key, path in runs.items()}
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(r["strategy"], r["n"]) for r in rows] == [("evolution", "2"), ("random", "2")]
    for row in rows:
        values = [summaries[row["strategy"], seed]["best_val_accuracy"] for seed in (0, 1)]
        assert float(row["best_val_accuracy_mean"]) == pytest.approx(np.mean(values))
        assert float(row["best_val_accuracy_sd"]) == pytest.approx(np.std(values, ddof=1))
        assert float(row["seconds_per_run"]) == pytest.approx(np.mean(
            [summaries[row["strategy"], seed]["wall_seconds"] for seed in (0, 1)]))
        assert float(row["train_steps_per_run"]) == np.mean(
            [summaries[row["strategy"], seed]["train_steps"] for seed in (0, 1)])
    assert results["rows"][1]["values"] == {"0": summaries["random", 0]["best_val_accuracy"],
                                            "1": summaries["random", 1]["best_val_accuracy"]}
    for strategy in ("evolution", "random"):
        page = (out / f"strategy={strategy}" / "report.html").read_text()
        assert "id='overlay'" in page and "seed0" in page and "seed1" in page  # the cell's seeds overlaid

    reference = run_search(SearchConfig.from_dict(json.loads((runs["evolution", 1] / "config.json").read_text())[
        "config"]), tmp_path / "never_stopped", progress=False)
    assert (runs["evolution", 1] / "history.jsonl").read_bytes() == (
        tmp_path / "never_stopped" / "history.jsonl").read_bytes()
    assert summaries["evolution", 1]["best_val_accuracy"] == reference["best_val_accuracy"]
