"""Tests for evonas.budget: settings derived from the data, and the wall-clock budget's decision and its resume."""

import json
import shutil

import pytest

from evonas import budget, search
from evonas.budget import (
    REAL_TEXT_SPACE,
    Decision,
    batch_size_for,
    capped_length,
    decide,
    derived,
    generations_within,
    steps_for,
)
from evonas.checkpoint import Checkpoints
from evonas.cli import main
from evonas.errors import ConfigError
from evonas.options import SearchConfig

# --- Settings from the data ---------------------------------------------------------------------


def test_batch_size_is_the_smallest_whose_epoch_is_at_most_800_steps():
    assert [batch_size_for(n) for n in (40, 8636, 25_600, 25_601, 51_200, 51_201, 102_400, 10**6)] == [
        32, 32, 32, 64, 64, 128, 128, 128]


def test_steps_are_epochs_of_train_rounded_up_to_whole_calls():
    assert steps_for(8636, 32, 1.0) == 275  # 269.9 steps -> 11 calls of 25
    assert steps_for(8636, 32, 4.0) == 1100  # 1079.5 -> 44 calls
    assert steps_for(1000, 50, 2.0) == 50  # exactly 40 -> 2 calls
    assert steps_for(1000, 40, 1.0) == 25  # exactly 25: no extra call
    assert steps_for(10, 32, 0.1) == 25  # at least one call
    assert steps_for(3, 1, 1 / 3 * 3, multiple=1) == 3  # float error does not add a step


def test_length_is_the_percentile_capped_by_tokenizer():
    assert capped_length(57, "word") == 57
    assert capped_length(900, "word") == 256
    assert capped_length(900, "byte") == 900 and capped_length(5000, "byte") == 1024


def test_derived_values_leave_every_explicit_option_alone():
    space = {"space": REAL_TEXT_SPACE}
    assert derived({}, 8636, 60) == {"batch_size": 32, "epochs": 1.0, "steps": 275, "max_length": 60, **space}
    assert derived({"batch_size": 16, "epochs": 2.0}, 8636, 60) == {"epochs": 2.0, "steps": 1100, "max_length": 60,
                                                                     **space}
    assert derived({"steps": 100, "max_length": 30, "space": {}}, 50_000, 400) == {"batch_size": 64}
    assert derived({"tokenizer": "byte"}, 100, 2000)["max_length"] == 1024


def test_real_text_space_holds_kims_cnn_and_is_a_valid_config():
    """The space real text gets by default is one `SearchConfig` accepts, and it holds the shape of Kim's CNN-rand
    (a conv of width 128, dropout 0.5, max pooling), which the built-in task's default space does not."""
    space = SearchConfig(dataset="x", space=REAL_TEXT_SPACE).search_space()
    kim = {"block0_op": "conv5", "width": 128, "dropout": 0.5, "pooling": "max"}
    assert all(value in space.gene(name).choices for name, value in kim.items())
    assert 128 not in SearchConfig().search_space().gene("width").choices


def test_the_built_in_task_keeps_its_batch_size_and_length_with_epochs():
    assert derived({"epochs": 2.0}, 1000, None) == {"epochs": 2.0, "steps": 75}  # 1000 * 2 / 32 = 62.5


def test_built_in_task_without_epochs_or_budget_is_not_resolved():
    values = {"steps": 7, "seed": 3}
    assert budget.resolve_values(values) == values
    assert budget.resolve_values({}) == {}


def test_budget_without_children_allows_many_generations_of_the_given_size():
    assert budget.resolve_values({"budget_minutes": 5.0, "children_per_generation": 4}) == {
        "budget_minutes": 5.0, "children_per_generation": 4, "num_children": 4000}
    assert budget.resolve_values({"budget_minutes": 5.0, "num_children": 16})["num_children"] == 16


def test_epochs_of_the_built_in_task_come_from_its_train_split():
    listops = {"num_train": 100, "num_validation": 10, "num_test": 10, "max_length": 12}
    resolved = budget.resolve_values({"epochs": 3.0, "listops": listops})
    assert resolved == {"epochs": 3.0, "listops": listops, "steps": 25}  # 300 / 32 = 9.4 steps -> one call


def test_ablate_cells_resolve_as_the_search_command_does():
    from evonas.ablate import Ablation

    listops = {"num_train": 100, "num_validation": 10, "num_test": 10, "max_length": 12}
    ablation = Ablation(base={"listops": listops}, grid={"epochs": [None, 3.0]}, seeds=[0])
    plain, three_epochs = (ablation.config(cell, 0) for cell in ablation.cells())
    assert (plain.steps, plain.epochs) == (150, None)
    assert (three_epochs.steps, three_epochs.epochs) == (25, 3.0)


def test_hurdles_are_checked_against_the_steps_the_data_sets_not_the_default_150():
    from evonas.options import SearchConfig

    listops = {"num_train": 6400, "num_validation": 10, "num_test": 10, "max_length": 12}
    values = {"epochs": 1.0, "listops": listops, "hurdle_steps": [175]}  # 6,400 / 32: 200 steps
    with pytest.raises(ConfigError, match="must be below"):
        SearchConfig(**values)  # against the default 150: what the check before the data must not do
    SearchConfig(**budget.before_data(values))
    assert SearchConfig(**budget.resolve_values(values)).hurdle_steps == (175,)
    with pytest.raises(ConfigError, match=r"--hurdle-steps \(200\) must be below --steps \(200\)"):
        SearchConfig(**budget.resolve_values(values | {"hurdle_steps": [200]}))
    assert budget.before_data({"steps": 100, "hurdle_steps": [175]}) == {"steps": 100, "hurdle_steps": [175]}
    with_quantile = values | {"hurdle_quantile": 0.75}  # the hurdles' other checks still see them before the data
    assert SearchConfig(**budget.before_data(with_quantile)).hurdle_quantile == 0.75
    with pytest.raises(ConfigError, match="must increase"):
        SearchConfig(**budget.before_data(values | {"hurdle_steps": [175, 100]}))


def test_steps_and_epochs_together_are_refused():
    with pytest.raises(ConfigError, match="give --steps or --epochs, not both"):
        budget.resolve_values({"steps": 10, "epochs": 1.0})


# --- The wall-clock budget ----------------------------------------------------------------------


def test_generations_within_counts_whole_generations_left_in_the_budget():
    assert generations_within(600, 100, 50, done=2, most=1000) == 12  # 500 s left: 10 more
    assert generations_within(600, 100, 51, done=2, most=1000) == 11  # 9.8 more: whole ones only
    assert generations_within(600, 100, 50, done=2, most=5) == 5
    assert generations_within(600, 700, 50, done=2, most=1000) == 2  # over already: none more
    assert generations_within(600, 100, 0.0, done=2, most=9) == 2  # no estimate: none more


def test_first_plan_waits_for_a_generation_that_compiled_nothing():
    undecided = Decision.undecided(100)
    assert decide(undecided, 10.0, 0, 90.0, 120.0, True, most=100) == undecided  # 210 s <= 600: go on, no plan
    late = decide(undecided, 10.0, 0, 300.0, 400.0, True, most=100)
    assert (late.generations, late.decided_after) == (1, 0)  # the next would end at 700 s > 600
    fitted = decide(undecided, 10.0, 1, 20.0, 140.0, False, most=100)
    assert (fitted.generations, fitted.decided_after, fitted.generation_seconds) == (2 + 23, 1, 20.0)  # 460 / 20
    assert decide(undecided, 10.0, 1, 20.0, 140.0, False, most=10).generations == 10
    assert decide(undecided, None, 1, 20.0, 140.0, False, most=100) == undecided, "no budget plans nothing"


def test_every_measured_generation_plans_again_from_the_mean_or_the_last_if_slower():
    fitted = decide(Decision.undecided(100), 10.0, 1, 20.0, 140.0, False, most=100)  # 25 generations planned
    faster = decide(fitted, 10.0, 2, 10.0, 150.0, False, most=100)
    assert (faster.generations, faster.measured, faster.measured_seconds) == (3 + 30, 2, 30.0)  # 450 s at 15 s
    assert faster.decided_after == 1 and faster.generation_seconds == 20.0, "the first plan stays on record"
    # Generations of 40 s from generation 2 on, ending 180, 220, ... s in: the last one's 40 s is above the mean.
    slower = fitted
    for generation, elapsed in enumerate(range(180, 600, 40), start=2):
        slower = decide(slower, 10.0, generation, 40.0, float(elapsed), False, most=100)
        assert slower.generations == generation + 1 + (600 - elapsed) // 40
    assert slower.generations == 13  # 580 s in after generation 12, the next would end at 620 s: stop
    compiling = decide(fitted, 10.0, 2, 300.0, 440.0, True, most=100)  # 300 s of compiling: the mean, 20 s, plans
    assert (compiling.generations, compiling.measured) == (3 + 8, 1)


# --- End to end ---------------------------------------------------------------------------------


def _ticking_clock(seconds_per_call: float):
    """A fake wall clock that advances `seconds_per_call` each time it is read, so decisions are exact."""
    now = [0.0]

    def clock():
        now[0] += seconds_per_call
        return now[0]

    return clock


@pytest.mark.slow
def test_budget_run_records_its_decision_and_resumes_to_the_same_history(tmp_path, monkeypatch, capsys):
    train = tmp_path / "t.tsv"
    train.write_text("text\tlabel\n" + "".join(f"w{i % 5} x{i % 3} y\t{i % 2}\n" for i in range(40)))
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "import", "--name", "toy", "--data-dir", data_dir, "--train", str(train), "--format", "tsv",
                 "--text-column", "text", "--label-column", "label"]) == 0
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"space": {"max_blocks": 1, "ops": ["identity", "conv3"], "widths": [16],
                                            "heads": [1]}}))
    args = ["search", "--dataset", "toy", "--data-dir", data_dir, "--config", str(config), "--children", "20",
            "--children-per-generation", "2", "--population", "4", "--sample-size", "2", "--min-frequency", "1",
            "--budget", "1.5", "--quiet"]
    monkeypatch.setattr(search, "clock", _ticking_clock(10.0))  # each generation reads it twice: 20 s apart
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    # Generation 0 compiled; generation 1 (20 s) ended 40 s in: 2 more of 20 s fit in the 50 s left, and so on.
    assert whole["budget"] == {"minutes": 1.5, "generations": 4, "decided_after_generation": 1,
                               "generation_seconds": 20.0, "elapsed_seconds": 40.0, "mean_generation_seconds": 20.0}
    assert (whole["generations"], whole["children"]) == (4, 8)
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())["config"]
    # 32 train examples after carving validation and test: batch 32, one epoch is 1 step -> one call of 25.
    assert (saved["epochs"], saved["steps"], saved["batch_size"], saved["budget_minutes"]) == (1.0, 25, 32, 1.5)
    assert saved["max_length"] == 3 and saved["num_children"] == 20

    saves = []
    save = Checkpoints.save

    def save_or_stop(self, progress):
        saves.append(None)
        if len(saves) == 4:  # the initial checkpoint, generations 0 and 1 (which decided), then stop in generation 2
            raise KeyboardInterrupt
        save(self, progress)

    monkeypatch.setattr(Checkpoints, "save", save_or_stop)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "stopped")]) == 130
    assert "interrupted after 2 of at most 10 generations (4 of at most 20 children)" in capsys.readouterr().err
    monkeypatch.setattr(Checkpoints, "save", save)
    shutil.copytree(tmp_path / "stopped", tmp_path / "slower")
    assert main(["search", "--resume", str(tmp_path / "stopped"), "--quiet"]) == 0
    resumed = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert (tmp_path / "stopped" / "history.jsonl").read_bytes() == (tmp_path / "whole" / "history.jsonl").read_bytes()
    timings = ("wall_seconds", "compilations")
    assert {k: v for k, v in resumed.items() if k not in timings} == {k: v for k, v in whole.items() if k not in timings}
    # On a machine 100 times slower, the resumed run keeps to the limit: generation 2 took 1,000 s, so it stops there.
    monkeypatch.setattr(search, "clock", _ticking_clock(1000.0))
    assert main(["search", "--resume", str(tmp_path / "slower"), "--quiet"]) == 0
    slower = json.loads((tmp_path / "slower" / "summary.json").read_text())
    assert slower["budget"]["generations"] == 3
    whole_lines = (tmp_path / "whole" / "history.jsonl").read_text().splitlines()
    assert (tmp_path / "slower" / "history.jsonl").read_text().splitlines() == whole_lines[:6]
    # A rerun that stops sooner (here: fewer children, no budget) trains the same first children.
    shorter = [a for a in args if a not in ("--budget", "1.5")]
    shorter[shorter.index("--children") + 1] = "4"
    assert main([*shorter, "--out", str(tmp_path / "shorter")]) == 0
    assert (tmp_path / "shorter" / "history.jsonl").read_text().splitlines() == whole_lines[:4]
    capsys.readouterr()

    assert main(["retrain", str(tmp_path / "whole"), "--seeds", "1", "--quiet"]) == 0
    results = json.loads((tmp_path / "whole" / "retrain" / "results.json").read_text())
    assert (results["epochs"], results["steps"]) == (12.0, 25)  # 12 x the search's epoch of 32 examples: 12 steps
