"""Python config files: `--config FILE.py[:ARG]` gives `get_config(ARG)`, checked as a JSON file is, and every
config in experiments/configs is a valid search in its full and smoke forms."""

import dataclasses
import json
from pathlib import Path

import pytest

from evonas.cli import main
from evonas.config_files import load_python_config, split_spec
from evonas.options import SearchConfig, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SEARCH_CONFIGS = sorted(path for path in CONFIGS.glob("*.py") if path.name != "common.py")


def test_spec_splits_at_the_colon_after_py_and_json_is_not_python():
    assert split_spec("configs/a.py") == (Path("configs/a.py"), None)
    assert split_spec("configs/a.py:smoke") == (Path("configs/a.py"), "smoke")
    assert split_spec("a.py:n=3:b") == (Path("a.py"), "n=3:b")
    assert split_spec("a.py:") == (Path("a.py"), "")
    assert split_spec("config.json") is None and split_spec("a.pyc") is None


def test_python_config_gives_what_the_same_json_gives(tmp_path):
    values = {"steps": 5, "mutation_rate": 0.2, "space": {"widths": [16, 32], "max_blocks": 2}}
    (tmp_path / "c.json").write_text(json.dumps(values))
    (tmp_path / "c.py").write_text("def get_config(arg=None):\n"
                                   "    return {'steps': 5 if arg is None else int(arg), 'mutation_rate': 0.2,\n"
                                   "            'space': {'widths': (16, 32), 'max_blocks': 2}}\n")
    assert read_config_file(tmp_path / "c.py") == read_config_file(tmp_path / "c.json")
    assert read_config_file(f"{tmp_path / 'c.py'}:7")["steps"] == 7  # the text after the colon is get_config's arg
    assert read_config_file(tmp_path / "c.py")["space"]["widths"] == [16, 32]  # tuples are recorded as JSON lists


def test_configs_in_two_directories_each_import_their_own_common_module(tmp_path):
    for name, steps in (("one", 3), ("two", 4)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "common.py").write_text(f"STEPS = {steps}\n")
        (tmp_path / name / "c.py").write_text("from common import STEPS\n\ndef get_config():\n"
                                              "    return {'steps': STEPS}\n")
    assert [load_python_config(str(tmp_path / name / "c.py"))["steps"] for name in ("one", "two")] == [3, 4]


@pytest.mark.parametrize("path", SEARCH_CONFIGS, ids=[p.name for p in SEARCH_CONFIGS])
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_every_experiment_config_is_a_valid_search(path, arg):
    config = SearchConfig(**read_config_file(f"{path}{arg}"))
    assert path.read_text().startswith('"""') and "Command" in path.read_text() and "Expected runtime" in path.read_text()
    if arg:  # the smoke form must be a run of seconds
        assert config.num_children * config.steps <= 10 * 20


def test_listops_config_is_the_default_search_whose_results_it_quotes():
    assert SearchConfig(**read_config_file(CONFIGS / "listops.py")) == SearchConfig()


@pytest.mark.slow
def test_smoke_config_runs_through_evonas_search_and_config_json_records_its_values(tmp_path, capsys):
    spec = f"{CONFIGS / 'listops.py'}:smoke"
    assert main(["search", "--config", spec, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved == json.loads(json.dumps(dataclasses.asdict(SearchConfig(**read_config_file(spec)))))
    assert saved["num_children"] == 4 and saved["space"]["widths"] == [16]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["children"] == 4 and summary["generations"] == 2
    capsys.readouterr()
    assert main(["search", "--resume", str(tmp_path / "run"), "--config", spec]) == 0  # the same values: no conflict
    assert "already finished" in capsys.readouterr().out
