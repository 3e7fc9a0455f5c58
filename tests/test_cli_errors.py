"""Bad input of every command: one line on stderr naming the option or file, exit status 2, no traceback,
nothing written, and no training or compiling before the error."""

import dataclasses
import json

import pytest

from evonas import data
from evonas.cli import main
from evonas.options import SearchConfig
from evonas.population import Population

TINY_SPACE = {"max_blocks": 1, "ops": ["identity", "conv3"], "widths": [16], "heads": [1]}


def finished_run(path):
    """A run directory as a finished search leaves it (its history made up: no test here trains)."""
    path.mkdir()
    config = SearchConfig(num_children=2, children_per_generation=2, population_size=2, sample_size=2, space=TINY_SPACE,
                          listops={"num_train": 20, "num_validation": 5, "num_test": 5, "max_length": 12})
    space = config.search_space()
    (path / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "space": space.to_json()}))
    data.write_task_files(data.listops_task(**config.listops), path)
    records = [{"id": i, "generation": 0, "genome": [0] * space.num_genes, "parents": [], "fitness": 0.5,
                "val_accuracy": 0.5, "diverged": False} for i in range(2)]
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "checkpoints" / "1").mkdir(parents=True)
    (path / "summary.json").write_text("{}")
    return path


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working directory with a finished run, a non-empty directory, files of every kind; training forbidden."""
    monkeypatch.chdir(tmp_path)
    finished_run(tmp_path / "run")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("a file\n")
    (tmp_path / "bad.json").write_text('{"steps": 5,}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"w{i} x\t{i % 2}\n" for i in range(10)))
    (tmp_path / "t.csv").write_text("g1,acc\n0,0.5\n1,0.7\n")
    for name, source in PYTHON_CONFIGS.items():
        (tmp_path / name).write_text(source)
    (tmp_path / "abl" / "base").mkdir(parents=True)
    finished_run(tmp_path / "abl" / "base" / "seed0")  # a finished run of another config than ablate_ok.py's
    (tmp_path / "model").mkdir()
    for name in ("genome.json", "model.json", "tokenizer.json", "params"):
        (tmp_path / "model" / name).write_text("not json")

    def no_training(*args, **kwargs):
        raise AssertionError("bad input must be rejected before anything trains or compiles")

    monkeypatch.setattr(Population, "fit", no_training)
    return tmp_path


TINY_RUN = {"num_children": 2, "children_per_generation": 2, "population_size": 2, "sample_size": 2,
            "space": TINY_SPACE}


def ablation_config(ablation) -> str:
    return f"def get_config(arg=None):\n    return {TINY_RUN!r}\n\ndef get_ablation(arg=None):\n    return {ablation!r}\n"


PYTHON_CONFIGS = {  # file name -> source, written into the working directory of every case
    "noget.py": "CONFIG = {'steps': 5}\n",
    "raises.py": "def get_config(arg=None):\n    return {'steps': 1 // 0}\n",
    "listed.py": "def get_config(arg=None):\n    return [('steps', 5)]\n",
    "broken.py": "def get_config(arg=None)\n    return {}\n",
    "missing_import.py": "import no_such_module_anywhere\n",
    "typo.py": "def get_config(arg=None):\n    return {'populaton': 3}\n",
    "bad_value.py": "def get_config(arg=None):\n    return {'steps': 0}\n",
    "not_data.py": "def get_config(arg=None):\n    return {'steps': print}\n",
    "smoke_only.py": "def get_config(arg=None):\n    assert arg == 'smoke', 'give :smoke'\n    return {}\n",
    "no_ablation.py": "def get_config(arg=None):\n    return {}\n",
    "ablate_ok.py": ablation_config({"seeds": [0]}),
    "ablate_keys.py": ablation_config({"seeds": [0], "grids": {}}),
    "ablate_grid_key.py": ablation_config({"grid": {"strategyy": ["random"]}, "seeds": [0]}),
    "ablate_grid_value.py": ablation_config({"grid": {"crossover_rate": [0.5, 2]}, "seeds": [0]}),
    "ablate_grid_list.py": ablation_config({"grid": {"strategy": "random"}, "seeds": [0]}),
    "ablate_grid_repeat.py": ablation_config({"grid": {"strategy": ["random", "random"]}, "seeds": [0]}),
    "ablate_grid_seed.py": ablation_config({"grid": {"seed": [1, 2]}, "seeds": [0]}),
    "ablate_no_seeds.py": ablation_config({"grid": {"strategy": ["random"]}}),
    "ablate_seed_value.py": ablation_config({"seeds": [0, -1]}),
    "ablate_metric.py": ablation_config({"seeds": [0], "metric": "accuracy"}),
    "ablate_cell.py": ablation_config({"grid": {"sample_size": [2, 4]}, "seeds": [0]}),
}


def config_file(tmp_path, values) -> str:
    path = tmp_path / "config_under_test.json"
    path.write_text(json.dumps(values))
    return str(path)


# (arguments, what the one line must contain); "{config}" is replaced by a config file holding the dict given.
SEARCH = [
    (["--children-per-generation", "0"], "--children-per-generation must be an integer from 1"),
    (["--population", "4"], "--children-per-generation (8) must be at most --population (4)"),
    (["--mutation-rate", "1.5"], "--mutation-rate must be a number from 0 to 1, got 1.5"),
    (["--crossover-rate", "-0.1"], "--crossover-rate must be a number from 0 to 1"),
    (["--vocab-size", "1"], "--vocab-size must be an integer from 3"),
    (["--steps", "0"], "--steps must be an integer from 1"),
    (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["--seed", "-1"], "--seed must be an integer from 0"),
    (["--sample-size", "20"], "--sample-size (20) must be at most --population (16)"),
    (["--children", "10"], "--children (10) must be a multiple of --children-per-generation (8)"),
    (["--batch-size", "0"], "--batch-size must be an integer from 1"),
    (["--objective", "{}"], "--objective must be a non-empty JSON object whose keys are metrics"),
    (["--objective", "{val_accuracy: 1}"], "argument --objective: not valid JSON"),
    (["--objective", '{"accuracy": 1}'], "--objective: unknown metrics ['accuracy']; known are val_accuracy"),
    (["--objective", '{"val_accuracy": "high"}'], "--objective: the weight of val_accuracy must be a finite number"),
    (["--objective", "[1]"], "--objective must be a JSON object, got [1]"),
    (["--constraints", '{"params": "< 1e6"}'], "--constraints: the bound of params must be a string '<= NUMBER'"),
    (["--constraints", '{"latency_ms": "<= 5"}'], "--constraints: unknown metrics ['latency_ms']"),
    (["--pareto", '{"params": "min"}'], "--pareto needs two or more metrics"),
    (["--pareto", '{"params": "min", "val_accuracy": "best"}'], "--pareto: val_accuracy must be 'max' or 'min'"),
    (["--pareto", '{"params": "min", "val_accuracy": "max"}', "--strategy", "ga"],
     "--pareto selects by Pareto rank, which only --strategy evolution does"),
    (["--config", {"constraints": {"flops": ">= x"}}], "--constraints: the bound of flops must be"),
    (["--memory-budget-gb", "0"], "--memory-budget-gb must be a number above 0"),
    (["--length-percentile", "101"], "--length-percentile must be a number above 0 and at most 100"),
    (["--max-length", "0"], "--max-length must be an integer from 1"),
    (["--min-frequency", "0"], "--min-frequency must be an integer of at least 1"),
    (["--population-form", "sideways"], "argument --population-form: invalid choice: 'sideways'"),
    (["--compute-dtype", "float16"], "argument --compute-dtype: invalid choice: 'float16'"),
    (["--strategy", "annealing"], "argument --strategy: invalid choice: 'annealing'"),
    (["--tokenizer", "char"], "argument --tokenizer: invalid choice: 'char'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--pop", "4"], "unrecognized arguments: --pop"),
    (["--out", "file.txt"], "--out file.txt is a file"),
    (["--out", "file.txt/run"], "file.txt is a file, not a directory"),
    (["--out", "run"], "--out run holds a finished search run"),
    (["--out", ""], "--out is empty; name a directory"),
    (["--out", "notes"], "--out notes holds files"),
    (["--resume", "missing"], "missing/config.json does not exist"),
    (["--resume", "run", "--overwrite"], "--overwrite replaces a run and --resume continues one"),
    (["--config", "missing.json"], "--config missing.json: cannot read it"),
    (["--config", "bad.json"], "--config bad.json: not valid JSON"),
    (["--config", "list.json"], "--config list.json must hold a JSON object"),
    (["--config", {"populaton": 3}], "unknown config keys ['populaton']"),
    (["--config", {"steps": "many"}], ": steps must be an integer from 1"),
    (["--config", {"space": {"widths": [33]}}], "space option widths must be a list of even integers"),
    (["--config", {"space": {"depth": 3}}], "unknown space options ['depth']"),
    (["--config", {"space": {"widths": [64], "heads": [3]}}], "width 64 is not divisible by 3 attention heads"),
    (["--config", {"listops": {"max_depth": 0}}], "'listops': max_depth must be an integer from 1 to 1,000,000"),
    (["--config", {"task": "sorting"}], "task must be one of 'listops'"),
    (["--config", "gone.py"], "--config gone.py: cannot read it (no such file)"),
    (["--config", "notes.py"], "--config notes.py: cannot read it (no such file)"),
    (["--config", "noget.py"], "--config noget.py has no get_config() function"),
    (["--config", "raises.py"], "--config raises.py: get_config() raised ZeroDivisionError: integer division"),
    (["--config", "smoke_only.py"], "--config smoke_only.py: get_config() raised AssertionError: give :smoke"),
    (["--config", "raises.py:smoke"], "--config raises.py: get_config('smoke') raised ZeroDivisionError"),
    (["--config", "listed.py"], "--config listed.py: get_config() must return a dict of config keys, got list"),
    (["--config", "broken.py"], "--config broken.py: importing it raised SyntaxError"),
    (["--config", "missing_import.py"], "importing it raised ModuleNotFoundError: No module named 'no_such_module"),
    (["--config", "typo.py"], "--config typo.py: unknown config keys ['populaton']"),
    (["--config", "bad_value.py"], "--config bad_value.py: steps must be an integer from 1"),
    (["--config", "not_data.py"], "--config not_data.py: get_config() returned a value that is not JSON data"),
    (["--hurdle-steps", "150"], "--hurdle-steps (150) must be below --steps (150)"),
    (["--hurdle-steps", "50", "25"], "--hurdle-steps must increase, got [50, 25]"),
    (["--hurdle-steps", "0"], "--hurdle-steps must be an integer of at least 1, got 0"),
    (["--hurdle-steps", "x"], "argument --hurdle-steps: invalid int value: 'x'"),
    (["--hurdle-quantile", "0.5"], "--hurdle-quantile sets how high hurdles are, but --hurdle-steps sets none"),
    (["--hurdle-steps", "25", "--hurdle-quantile", "2"], "--hurdle-quantile must be a number from 0 to 1 (or null), got 2.0"),
    (["--config", {"hurdle_steps": "25"}], ": hurdle_steps must be an integer or a list of integers"),
    (["--budget", "0"], "--budget must be a number above 0 and at most 10080 (or null), got 0.0"),
    (["--budget", "soon"], "argument --budget: invalid float value: 'soon'"),
    (["--epochs", "-1"], "--epochs must be a number above 0 and at most 10000 (or null), got -1.0"),
    (["--config", {"epochs": "two"}], ": epochs must be a number above 0"),
    (["--epochs", "2", "--steps", "50"], "give --steps or --epochs, not both"),
    (["--config", {"steps": 50}, "--epochs", "2"], "give --steps or --epochs, not both"),
    (["--predictor-pool", "0"], "--predictor-pool must be an integer from 1 to 64, got 0"),
    (["--predictor-pool", "65"], "--predictor-pool must be an integer from 1 to 64, got 65"),
    (["--predictor-pool", "two"], "argument --predictor-pool: invalid int value: 'two'"),
    (["--predictor-pool", "4", "--predictor-min-records", "1"], "--predictor-min-records must be an integer from 2"),
    (["--predictor-min-records", "8"], "--predictor-min-records sets when the predictor starts, but --predictor-pool is 1"),
    (["--config", {"predictor_pool": 2.5}], ": predictor_pool must be an integer from 1 to 64, got 2.5"),
    (["--inherit", "--strategy", "random"], "only --strategy evolution breeds children from parents; got --strategy random"),
    (["--config", {"inherit": 1}], ": inherit must be true or false, got 1"),
    (["--coordinator", "nowhere"], "--coordinator must be HOST:PORT"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "--process-id must be from 0"),
]
RETRAIN = [
    (["missing"], "RUN_DIR missing is not a search run directory"),
    (["file.txt"], "RUN_DIR file.txt is not a search run directory"),
    (["notes"], "RUN_DIR notes is not a search run directory"),
    (["run", "--top-k", "0"], "--top-k must be at least 1"),
    (["run", "--seeds", "0"], "--seeds must be at least 1"),
    (["run", "--steps", "0"], "--steps must be at least 1"),
    (["run", "--top-k", "9"], "--top-k 9 asked, but the run has only 1 distinct genomes"),
    (["run", "--seeds", "three"], "argument --seeds: invalid int value"),
    (["run", "--warmup-fraction", "1"], "--warmup-fraction must be in [0, 1), got 1.0"),
    (["run", "--eval-every", "0"], "--eval-every must be at least 1, got 0"),
    (["run", "--steps", "10", "--eval-every", "3"], "--eval-every 3 must divide the retrain's 10 steps"),
    (["run", "--epochs", "0"], "--epochs must be a number above 0 and at most 10,000, got 0.0"),
    (["run", "--epochs", "2", "--steps", "100"], "give --steps or --epochs, not both"),
    (["run", "--folds", "1"], "--folds must be at least 2, got 1"),
    (["run", "--folds", "31"], "--folds 31 asked, but the task has only 30 labelled examples"),
    (["run", "--folds", "ten"], "argument --folds: invalid int value"),
    (["run", "--tune", "1"], "--tune must be at least 2 (the winner's own setting and another), got 1"),
    (["run", "--tune", "13"], "--tune 13 asked, but the space has only 12 settings of learning_rate x weight_decay"),
]
PREDICT = [
    (["missing"], "MODEL_DIR"),
    (["notes"], "is not an exported model: missing genome.json"),
    (["model"], "genome.json is not valid JSON"),
]
DATA_IMPORT = [
    (["--data-dir", "d", "--train", "t.tsv", "--format", "tsv"], "the following arguments are required: --name"),
    (["--name", "toy", "--data-dir", "d", "--train", "t.tsv", "--format", "xml"], "argument --format: invalid choice"),
    (["--name", "toy", "--data-dir", "file.txt", "--train", "t.tsv", "--format", "tsv", "--text-column", "text",
      "--label-column", "label"], "--data-dir file.txt: "),
    (["--name", "toy", "--data-dir", "d", "--train", "notes", "--format", "tsv", "--text-column", "text",
      "--label-column", "label"], "cannot read notes: Is a directory"),
    (["--name", "toy", "--data-dir", "d", "--train", "gone.tsv", "--format", "tsv", "--text-column", "text",
      "--label-column", "label"], "cannot read gone.tsv"),
    (["--name", "Toy", "--data-dir", "d", "--train", "t.tsv", "--format", "tsv", "--text-column", "text",
      "--label-column", "label"], "dataset name 'Toy' must be snake_case"),
    (["--name", "toy", "--data-dir", "d", "--train", "t.tsv", "--format", "tsv", "--text-column", "text",
      "--label-column", "label", "--encoding", "nope"], "unknown encoding 'nope'"),
    (["--name", "toy", "--data-dir", "d", "--train", "t.tsv", "--format", "lines"], "the lines format takes LABEL=FILE"),
    (["--name", "toy", "--data-dir", "d", "--train", "t.tsv", "--format", "tsv"], "needs a text column and a label"),
    (["--name", "toy", "--data-dir", "d", "--train", "empty.tsv", "--format", "tsv", "--text-column", "text",
      "--label-column", "label"], "empty.tsv is empty"),
    (["--name", "toy", "--data-dir", "d", "--train", "t.tsv", "--format", "tsv", "--text-column", "body",
      "--label-column", "label"], "t.tsv has no column 'body'"),
]
REPORT = [
    (["missing"], "missing is not a directory"),
    (["notes"], "notes is not a search run directory: it has no config.json or history.jsonl"),
    (["file.txt"], "file.txt is not a directory"),
]
REPLAY_ARGS = ["--metric", "acc", "--evaluations", "2", "--seeds", "2", "--out", "o.json"]
REPLAY = [
    (["--table", "gone.csv", *REPLAY_ARGS], "gone.csv: cannot read it as a UTF-8 CSV file"),
    (["--table", "file.txt", *REPLAY_ARGS], "file.txt: expected a header line and at least one row"),
    (["--table", "t.csv", *REPLAY_ARGS[:-2], "--strategy", "annealing", "--out", "o.json"],
     "argument --strategy: invalid choice: 'annealing'"),
    (["--table", "t.csv", "--metric", "loss", *REPLAY_ARGS[2:]], "t.csv: no column 'loss'"),
    (["--table", "t.csv", "--metric", "acc", "--evaluations", "0", *REPLAY_ARGS[4:]],
     "--evaluations and --seeds must be at least 1"),
]
ABLATE = [
    (["gone.py"], "CONFIG gone.py: cannot read it (no such file)"),
    (["bad.json"], "CONFIG bad.json must be a Python file, FILE.py or FILE.py:ARG"),
    (["raises.py"], "CONFIG raises.py: get_config() raised ZeroDivisionError"),
    (["typo.py"], "CONFIG typo.py: unknown config keys ['populaton']"),
    (["no_ablation.py"], "CONFIG no_ablation.py has no get_ablation() function"),
    (["ablate_keys.py"], "get_ablation() has unknown keys ['grids']; known are ['cells', 'grid', 'metric', 'seeds']"),
    (["ablate_grid_key.py"], "CONFIG ablate_grid_key.py: grid option 'strategyy' is not a config key"),
    (["ablate_grid_value.py"], "grid crossover_rate must be a number from 0 to 1, got 2"),
    (["ablate_grid_list.py"], "grid strategy must be a non-empty list of values, got 'random'"),
    (["ablate_grid_repeat.py"], "grid strategy repeats a value"),
    (["ablate_grid_seed.py"], "grid cannot vary 'seed'; the seeds are get_ablation()'s 'seeds'"),
    (["ablate_no_seeds.py"], "must give 'seeds', a non-empty list of integers, got None"),
    (["ablate_seed_value.py"], "CONFIG ablate_seed_value.py: seeds must be an integer from 0"),
    (["ablate_metric.py"], "metric must be one of 'best_val_accuracy'"),
    (["ablate_cell.py"], "cell sample_size=4: --sample-size (4) must be at most --population (2)"),
    (["ablate_ok.py", "--out", "file.txt"], "--out file.txt is a file; give a directory"),
    (["ablate_ok.py", "--out", ""], "--out is empty"),
    (["ablate_ok.py", "--out", "abl"], "abl/base/seed0 holds a run of another config (listops="),
]
CASES = ([("search", args, expected) for args, expected in SEARCH] + [("retrain", a, e) for a, e in RETRAIN]
         + [("predict", a, e) for a, e in PREDICT] + [("data import", a, e) for a, e in DATA_IMPORT]
         + [("report", a, e) for a, e in REPORT] + [("replay", a, e) for a, e in REPLAY]
         + [("ablate", a, e) for a, e in ABLATE])


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


@pytest.mark.parametrize(("command", "args", "expected"), CASES, ids=[f"{c} {' '.join(map(str, a))}"[:70]
                                                                      for c, a, _ in CASES])
def test_bad_input_gets_one_line_naming_it_and_writes_nothing(place, capsys, command, args, expected):
    args = [config_file(place, arg) if isinstance(arg, dict) else arg for arg in args]
    before = snapshot(place)
    assert main([*command.split(), *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"evonas {command}: error: "), captured.err
    assert expected in lines[0]
    assert captured.out == ""
    assert snapshot(place) == before, "bad input wrote something"


def test_there_are_at_least_30_bad_inputs_across_the_commands():
    assert len(CASES) >= 30 and {c for c, _, _ in CASES} == {"search", "retrain", "predict", "data import", "report",
                                                            "replay", "ablate"}


def test_deprecated_batch_warns_and_still_means_children_per_generation(place, capsys):
    assert main(["search", "--batch", "3", "--children", "10"]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert "--batch is deprecated" in warning and "--children-per-generation" in warning
    assert "--children (10) must be a multiple of --children-per-generation (3)" in error


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("evonas ")


def test_retrain_of_an_unfinished_search_says_so(place, capsys):
    (place / "run" / "summary.json").unlink()
    assert main(["retrain", "run", "--top-k", "9"]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert "holds an unfinished search (1 of 1 generations, 2 children)" in warning and "--resume" in warning
    assert "--top-k 9" in error
