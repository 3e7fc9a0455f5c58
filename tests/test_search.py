"""End to end: the search loop, its run directory, determinism and bounded compilation."""

import json

import pytest
from helpers import SMALL_SPACE

from evonas.cli import main
from evonas.errors import ConfigError
from evonas.search import SearchConfig, load_task, run_search


def small_config(**overrides):
    values = {"num_children": 8, "children_per_generation": 4, "population_size": 4, "sample_size": 2, "steps": 10,
              "steps_per_call": 5, "space": SMALL_SPACE}
    return SearchConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_search(small_config(), out, progress=False)
    return out


@pytest.mark.slow
def test_run_directory_holds_history_config_and_summary(run_dir):
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 8
    for record in history:
        assert {"id", "genome", "parents", "generation", "fitness", "val_accuracy", "params", "diverged"} <= set(record)
    assert [r["id"] for r in history] == list(range(8))
    assert all(r["parents"] == [] for r in history[:4]), "the first generation is random"
    assert all(r["parents"] and max(r["parents"]) < 4 for r in history[4:]), "children of the first generation"
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("best_id", "best_genome", "best_architecture", "best_val_accuracy", "children", "wall_seconds",
                "compilations"):
        assert key in summary
    best = max((r for r in history if not r["diverged"]), key=lambda r: r["fitness"])
    assert (summary["best_id"], summary["best_val_accuracy"]) == (best["id"], best["val_accuracy"])
    config = json.loads((run_dir / "config.json").read_text())
    assert SearchConfig.from_dict(config["config"]).num_children == 8


@pytest.mark.slow
def test_same_seed_gives_identical_history_whatever_the_memory_budget(run_dir, tmp_path):
    summary = run_search(small_config(memory_budget_gb=1e-6), tmp_path, progress=False)  # one member at a time
    assert (tmp_path / "history.jsonl").read_bytes() == (run_dir / "history.jsonl").read_bytes()
    assert summary["compilations"] == 3


@pytest.mark.slow
def test_compilations_do_not_grow_with_children(run_dir, tmp_path):
    summary = run_search(small_config(num_children=16), tmp_path, progress=False)
    assert summary["compilations"] == json.loads((run_dir / "summary.json").read_text())["compilations"] == 3


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"--children \(10\) must be a multiple of --children-per-generation \(4\)"):
        small_config(num_children=10)
    with pytest.raises(ConfigError, match="--strategy must be one of 'evolution', 'random', 'ga', 'cma_es', got 'annealing'"):
        small_config(strategy="annealing")
    with pytest.raises(ConfigError, match=r"unknown config keys \['populaton'\]"):
        SearchConfig.from_dict({"populaton": 3})
    with pytest.raises(ConfigError, match="--memory-budget-gb must be a number above 0"):
        small_config(memory_budget_gb=0)
    with pytest.raises(ConfigError, match=r"unknown listops options \['depth'\]"):
        small_config(listops={"depth": 3})
    with pytest.raises(ConfigError, match="--compute-dtype must be one of 'auto', 'float32', 'bfloat16'"):
        small_config(compute_dtype="float16")


def test_listops_options_shape_the_built_in_task():
    task = load_task(small_config(listops={"max_length": 20, "num_train": 40, "num_validation": 10, "num_test": 10}))
    assert task.max_length == 20 and [len(task.train), len(task.validation), len(task.test)] == [40, 10, 10]


@pytest.mark.slow
def test_cli_search_prints_best_architecture(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"space": SMALL_SPACE, "steps": 5}))
    code = main(["search", "--out", str(tmp_path / "run"), "--config", str(config), "--children", "4",
                 "--children-per-generation", "4",
                 "--population", "4", "--sample-size", "2", "--steps", "2", "--strategy", "random", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and '"blocks"' in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["strategy"] == "random" and summary["children"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["steps"] == 2


def test_cli_rejects_bad_arguments_with_a_message(tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path), "--children", "5", "--children-per-generation", "2"]) == 2
    assert "--children (5) must be a multiple of --children-per-generation (2)" in capsys.readouterr().err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"popsize": 3}))
    assert main(["search", "--out", str(tmp_path), "--config", str(config)]) == 2
    assert f"--config {config}: unknown config keys ['popsize']" in capsys.readouterr().err
