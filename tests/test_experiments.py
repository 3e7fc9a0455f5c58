"""The experiments run end to end: the real-text benchmark's smoke mode (on the shared SST-2 and MR files), the
hurdle study's arithmetic and the budget run's commands (the benchmarks: tests/test_benchmarks.py; the
evolution-vs-random comparison, now an `evonas ablate` config: tests/test_ablate.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPERIMENTS, load_experiment

from evonas.datasets import load_text_task
from evonas.models import Architecture
from evonas.text_files import import_files

text_benchmark = load_experiment("text_benchmark")

needs_shared_data = pytest.mark.skipif(
    not (text_benchmark.SHARED_DATA / "sst2" / "train.tsv").is_file()
    or not (text_benchmark.SHARED_DATA / "mr" / "rt-polarity.neg").is_file(),
    reason=f"the shared datasets are not at {text_benchmark.SHARED_DATA} (../shared/data beside the repository)",
)


@pytest.mark.slow
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


def test_hurdles_study_counts_the_steps_spent_until_the_plain_best_is_reached():
    hurdles_study = load_experiment("hurdles_study")
    history = [{"generation": g, "fitness": f, "steps": s} for g, f, s in
               [(0, 0.4, 10), (0, None, 2), (1, 0.5, 2), (1, 0.3, 10), (2, 0.7, 10), (2, 0.6, 2)]]
    assert hurdles_study.best_so_far_by_generation(history, 10) == [(12, 0.4), (24, 0.5), (36, 0.7)]
    assert hurdles_study.reach(history, 10, 0.5, [5.0, 9.0, 14.0]) == (24, 9.0)
    assert hurdles_study.reach(history, 10, 0.8, [5.0, 9.0, 14.0]) == (None, None)
    plain = [{"generation": 0, "fitness": 0.5}]  # no "steps": every child trained the full budget
    assert hurdles_study.best_so_far_by_generation(plain, 10) == [(10, 0.5)]


@pytest.mark.parametrize("dataset", ["mr", "sst2"])
def test_budget_run_runs_what_a_user_runs_with_no_setting_but_the_budget(dataset):
    budget_run = load_experiment("budget_run")
    imports, searches, retrains = budget_run.commands(dataset, Path("/w"), 10.0)
    assert imports[:5] == ["evonas", "data", "import", "--name", dataset]
    assert ("cp1252" in imports) == (dataset == "mr") and ("--test" in imports) == (dataset == "sst2")
    assert searches == ["evonas", "search", "--dataset", dataset, "--data-dir", "/w/tfds", "--budget", "10", "--out",
                        "/w/run", "--overwrite", "--quiet"]
    assert retrains == ["evonas", "retrain", "/w/run", "--quiet"]
    if not budget_run.SHARED.is_dir():
        pytest.skip(f"{budget_run.SHARED} is absent: the data files the commands name are not checked")
    files = [Path(a.split("=")[-1]) for a, before in zip(imports[1:], imports) if before in ("--train", "--test")]
    assert files and all(f.is_file() for f in files), files


def test_retrain_length_candidates_are_distinct_genomes_of_its_space_in_fitness_order():
    retrain_length = load_experiment("retrain_length")
    records = [json.loads(line) for line in retrain_length.history_lines()]
    genomes = [tuple(r["genome"]) for r in records]
    assert len(set(genomes)) == len(retrain_length.CANDIDATES)
    assert [r["fitness"] for r in records] == sorted((r["fitness"] for r in records), reverse=True)
    kim = Architecture.from_genome(retrain_length.SPACE, np.array(genomes[0]))
    assert ([b.op for b in kim.blocks], kim.width, kim.dropout, kim.pooling) == (["conv3"], 128, 0.5, "max")


def test_head_dropout_study_pairs_each_winner_with_and_without_the_dropout(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # it imports retrain_length, as when run from experiments/
    study, retrain_length = load_experiment("head_dropout"), load_experiment("retrain_length")
    for dataset, winners in study.GENOMES.items():
        candidates = [g | {"head_dropout": rate} for g in winners for rate in study.RATES]
        records = [json.loads(line) for line in retrain_length.history_lines(study.SPACE, candidates, study.BASE)]
        archs = [Architecture.from_genome(study.SPACE, np.array(r["genome"])) for r in records]
        assert len({tuple(r["genome"]) for r in records}) == len(candidates), dataset
        assert [a.head_dropout for a in archs] == list(study.RATES) * len(winners)
        assert all(len(a.blocks) == 1 for a in archs)


def test_cnn_rand_caps_each_class_weight_vector_at_norm_three_and_keeps_smaller_ones():
    cnn_rand = load_experiment("cnn_rand")
    kernel = np.zeros((300, 3), np.float32)
    kernel[:, 0], kernel[0, 1], kernel[0, 2] = 1.0, 2.0, 3.5  # norms sqrt(300), 2, 3.5
    params = cnn_rand.max_norm({"out": {"kernel": kernel, "bias": np.ones(3, np.float32)}})
    norms = np.linalg.norm(np.asarray(params["out"]["kernel"]), axis=0)
    np.testing.assert_allclose(norms, [3.0, 2.0, 3.0], rtol=1e-5)
    np.testing.assert_array_equal(params["out"]["bias"], np.ones(3))


def test_cnn_rand_pads_embed_as_zeros_so_padding_does_not_change_the_logits():
    import jax

    cnn_rand = load_experiment("cnn_rand")
    model = cnn_rand.CNNRand(vocab_size=20, num_classes=3)
    tokens = np.array([[3, 4, 5, 6, 7, 0, 0, 0, 0]], np.int32)  # 4 pads: every window that holds a word is here
    params = model.init(jax.random.key(0), tokens, train=False)["params"]
    logits = model.apply({"params": params}, tokens, train=False)
    assert logits.shape == (1, 3)
    # More pads add only windows of zero embeddings, whose ReLU features (of zero-initialized biases) are 0, at most
    # the max over time of ReLU features: the logits stay as they are when pads embed as zeros.
    padded = np.concatenate([tokens, np.zeros((1, 4), np.int32)], axis=1)
    np.testing.assert_allclose(model.apply({"params": params}, padded, train=False), logits, rtol=1e-5, atol=1e-6)
