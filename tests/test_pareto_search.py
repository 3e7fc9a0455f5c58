"""A Pareto search with a constraint, end to end through the CLI: pareto.json, the summary, and an exact resume."""

import json

import numpy as np
import pytest

from evonas import checkpoint
from evonas.cli import main
from evonas.costs import child_costs
from evonas.models import Architecture
from evonas.search import SearchConfig, load_task
from evonas.supernet import PopulationModel

TINY_SPACE = {"max_blocks": 2, "ops": ["identity", "conv3"], "activations": ["relu"], "norms": ["none"],
              "widths": [16, 32], "heads": [1], "ffn_expansions": [1], "dropouts": [0.0], "positionals": ["none"],
              "poolings": ["mean"], "learning_rates": [0.001, 0.01], "weight_decays": [0.0], "optimizers": ["adamw"]}
MAX_PARAMS = 1500
CONFIG = {"space": TINY_SPACE, "num_children": 12, "children_per_generation": 2, "population_size": 4,
          "sample_size": 2, "steps": 2, "steps_per_call": 2, "batch_size": 8,
          "pareto": {"val_accuracy": "max", "flops": "min"}, "constraints": {"params": f"<= {MAX_PARAMS}"}}


def records(path):
    return [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]


def dominates(a, b):
    better_or_equal = a["val_accuracy"] >= b["val_accuracy"] and a["flops"] <= b["flops"]
    return better_or_equal and (a["val_accuracy"] > b["val_accuracy"] or a["flops"] < b["flops"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run that never stopped, and one stopped (Ctrl-C) after its third generation and resumed."""
    base = tmp_path_factory.mktemp("pareto")
    (base / "config.json").write_text(json.dumps(CONFIG))
    assert main(["search", "--config", str(base / "config.json"), "--out", str(base / "whole"), "--quiet"]) == 0
    save, saved = checkpoint.Checkpoints.save, []

    def save_then_stop(self, progress):
        save(self, progress)
        saved.append(None)
        if len(saved) == 4:  # the initial checkpoint, then three generations
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint.Checkpoints, "save", save_then_stop)
        assert main(["search", "--config", str(base / "config.json"), "--out", str(base / "stopped"), "--quiet"]) == 130
    assert len(records(base / "stopped")) == 6
    assert main(["search", "--resume", str(base / "stopped"), "--quiet"]) == 0
    return base / "whole", base / "stopped"


@pytest.mark.slow
def test_pareto_json_is_the_non_dominated_set_of_the_children_that_meet_the_constraint(runs):
    whole, _ = runs
    history, front = records(whole), json.loads((whole / "pareto.json").read_text())
    candidates = [r for r in history if not r["diverged"] and r["params"] <= MAX_PARAMS]
    breakers = [r for r in history if r["params"] > MAX_PARAMS]
    assert candidates and breakers, "the test needs children on both sides of the constraint"
    expected = {r["id"] for r in candidates if not any(dominates(o, r) for o in candidates)}
    assert {r["id"] for r in front["front"]} == expected
    assert all(r["fitness"] is None for r in breakers)
    parents = {p for r in history for p in r["parents"]}
    assert not parents & {r["id"] for r in breakers}, "a child that breaks a constraint is never a parent"
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["pareto_front"] == "pareto.json"
    assert summary["best_params"] <= MAX_PARAMS
    assert summary["best_id"] == max(candidates, key=lambda r: r["val_accuracy"])["id"]


@pytest.mark.slow
def test_a_stopped_pareto_search_resumes_to_the_same_history_front_and_summary(runs):
    whole, stopped = runs
    assert (stopped / "history.jsonl").read_bytes() == (whole / "history.jsonl").read_bytes()
    assert (stopped / "pareto.json").read_bytes() == (whole / "pareto.json").read_bytes()
    timing = ("wall_seconds", "compilations")
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k not in timing}
                 for d in (whole, stopped)]
    assert summaries[0] == summaries[1]


@pytest.mark.slow
def test_latency_is_measured_only_when_asked_and_grows_with_the_batch():
    config = SearchConfig(space=TINY_SPACE, listops={"max_length": 12, "num_train": 8, "num_validation": 8,
                                                     "num_test": 8})
    task = load_task(config)
    model = PopulationModel(config.search_space(), task.vocab_size, task.max_length, task.num_classes)
    arch = Architecture.from_genome(config.search_space(), [len(g.choices) - 1 for g in config.search_space().genes])
    assert set(child_costs(model, arch, {})) == {"params", "flops"}
    costs = child_costs(model, arch, {"latency_ms_b1": 1, "latency_ms_b64": 64})
    assert 0 < costs["latency_ms_b1"] < costs["latency_ms_b64"] < 1e3
    assert np.isfinite(costs["params"]) and costs["flops"] > 0
