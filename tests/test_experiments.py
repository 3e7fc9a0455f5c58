"""The real-text benchmark's smoke mode runs end to end, as CI runs it, on the shared SST-2 and MR files."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from evonas.datasets import load_text_task
from evonas.text_files import import_files

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
spec = importlib.util.spec_from_file_location("text_benchmark", EXPERIMENTS / "text_benchmark.py")
text_benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(text_benchmark)

needs_shared_data = pytest.mark.skipif(
    not (text_benchmark.SHARED_DATA / "sst2" / "train.tsv").is_file()
    or not (text_benchmark.SHARED_DATA / "mr" / "rt-polarity.neg").is_file(),
    reason=f"the shared datasets are not at {text_benchmark.SHARED_DATA} (../shared/data beside the repository)",
)


@needs_shared_data
def test_sst2_smoke_run_writes_accuracy_over_three_seeds_and_the_commands(tmp_path):
    results_path = tmp_path / "results.json"
    assert text_benchmark.main(["--config", "sst2", "--smoke", "--out", str(tmp_path / "out"),
                                "--results", str(results_path), "--quiet"]) == 0
    results = json.loads(results_path.read_text())
    assert results["smoke"] and results["seeds"] == [0, 1, 2]
    assert len(results["test_accuracies"]) == 3
    assert results["test_accuracy_mean"] == pytest.approx(np.mean(results["test_accuracies"]))
    assert results["test_accuracy_std"] == pytest.approx(np.std(results["test_accuracies"], ddof=1))
    assert results["architecture"]["blocks"][0]["op"] in ("conv3", "gated_mlp")
    assert results["search"]["children"] == 4
    assert results["commands"][0].startswith("evonas data import --name sst2")
    assert (tmp_path / "out" / "search" / "retrain" / "model").is_dir()


@needs_shared_data
def test_mr_smoke_subset_is_decoded_from_cp1252_and_split_90_10_per_class(tmp_path):
    config = text_benchmark.load_config("mr", smoke=True)
    files = text_benchmark.source_files(config, text_benchmark.SHARED_DATA, tmp_path / "subset")
    import_files("mr", tmp_path / "data", files, file_format="lines", encoding="cp1252")
    task = load_text_task("mr", tmp_path / "data", seed=0)  # the configs keep SearchConfig's task_seed, 0
    per_class = config["smoke_lines"]
    assert task.label_names == ("neg", "pos")
    assert np.bincount(task.test.labels).tolist() == [per_class // 10] * 2
    assert len(task.train) + len(task.validation) == 2 * per_class - len(task.test)


def test_unknown_config_is_a_clear_error(tmp_path, capsys):
    assert text_benchmark.main(["--config", "nonexistent", "--out", str(tmp_path)]) == 2
    assert "unknown config 'nonexistent'" in capsys.readouterr().err
