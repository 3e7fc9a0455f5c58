"""Retrain a search's best genomes with several seeds, export one, and predict with it from the command line."""

import dataclasses
import io
import json
import shutil
import sys

import jax
import numpy as np
import pytest

from evonas.cli import main
from evonas.export import load_model
from evonas.retrain import default_eval_every, retrain, top_genomes
from evonas.retrain_results import refit_steps
from evonas.search import SearchConfig, load_task, run_search

TINY_SPACE = {"max_blocks": 1, "ops": ("attention", "conv3"), "widths": (16,), "heads": (1, 2),
              "activations": ("relu",), "norms": ("layernorm",), "dropouts": (0.0, 0.1), "optimizers": ("adamw",),
              "positionals": ("learned", "none"), "poolings": ("mean", "max")}
CONFIG = SearchConfig(num_children=4, children_per_generation=4, population_size=4, sample_size=2, steps=5,
                      steps_per_call=5, space=TINY_SPACE)
EXPRESSIONS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[SM 1 2 ]", "[MED 3 [MAX 8 1 ] 5 ]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_search(CONFIG, out, progress=False)
    return out


@pytest.fixture(scope="module")
def retrained(run_dir):
    return retrain(run_dir, top_k=2, num_seeds=2, steps=10, progress=False)


def copy_of_search(run_dir, tmp_path):
    """A fresh run directory with the search's files only, so a retrain there leaves the fixture's alone."""
    tmp_path.mkdir(exist_ok=True)
    for name in ("config.json", "history.jsonl", "summary.json", "tokenizer.json", "task.json"):
        shutil.copy(run_dir / name, tmp_path / name)
    return tmp_path


@pytest.mark.slow
def test_results_hold_per_seed_test_accuracies_of_the_top_genomes(run_dir, retrained):
    results = json.loads((run_dir / "retrain" / "results.json").read_text())
    assert results == json.loads(json.dumps(retrained.results))
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [g["genome"] for g in results["genomes"]] == [r["genome"] for r in top_genomes(history, 2)]
    assert results["genomes"][0]["search_id"] == json.loads((run_dir / "summary.json").read_text())["best_id"]
    assert results["seeds"] == [0, 1] and results["steps"] == 10 and results["wall_seconds"] > 0
    assert results["eval_every"] == 5 and results["warmup_fraction"] == 0.05  # the search's 5 steps per call
    for genome in results["genomes"]:
        assert len(genome["test_accuracies"]) == len(genome["validation_accuracies"]) == 2
        assert set(genome["best_steps"]) <= {5, 10}
        assert genome["test_accuracy_mean"] == pytest.approx(np.mean(genome["test_accuracies"]))
        assert genome["test_accuracy_std"] == pytest.approx(np.std(genome["test_accuracies"], ddof=1))
    chosen = results["genomes"][results["exported"]["rank"]]
    assert chosen["genome"] == results["genome"] and chosen["test_accuracies"] == results["test_accuracies"]
    assert results["test_accuracy_mean"] == chosen["test_accuracy_mean"]
    mean_validation = [np.mean(g["validation_accuracies"]) for g in results["genomes"]]
    assert results["exported"]["rank"] == int(np.argmax(mean_validation)), "validation, never test, picks the export"
    exported = results["exported"]
    assert exported["best_step"] == chosen["best_steps"][exported["seed"]]
    assert exported["validation_accuracy"] == chosen["validation_accuracies"][exported["seed"]]


def test_default_eval_every_scores_at_most_ten_times_at_whole_calls():
    assert default_eval_every(600, 25) == 75  # 24 calls: every 3rd, 8 scores
    assert default_eval_every(100, 10) == 10 and default_eval_every(110, 10) == 110  # 11 calls, a prime: the last
    assert default_eval_every(10, 5) == 5


@pytest.mark.slow
def test_seeds_start_from_different_parameters(retrained):
    seed0, seed1 = (jax.tree.map(lambda a, m=member: a[m], retrained.params) for member in (0, 2))
    assert (retrained.genomes[0] == retrained.genomes[2]).all(), "member m is seed m // k of genome m % k"
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(seed0), jax.tree.leaves(seed1)))


@pytest.mark.slow
def test_exported_model_gives_the_trained_members_logits(run_dir, retrained):
    exported = retrained.results["exported"]
    member = exported["seed"] * 2 + exported["rank"]
    test = load_task(CONFIG).test
    stored = jax.tree.map(lambda a: a[member], retrained.params)
    trained_logits = jax.jit(retrained.population.model.apply)(stored, retrained.genomes[member], test.tokens,
                                                               test.tokens != 0)
    model = load_model(run_dir / "retrain" / "model")
    logits = model.logits(test.tokens)
    np.testing.assert_allclose(logits, trained_logits, rtol=1e-5, atol=1e-5)
    assert np.mean(logits.argmax(-1) == test.labels) == pytest.approx(exported["test_accuracy"])
    assert model.label_names == tuple(str(digit) for digit in range(10))
    genome_file = json.loads((run_dir / "retrain" / "model" / "genome.json").read_text())
    results = json.loads((run_dir / "retrain" / "results.json").read_text())
    assert (genome_file["genome"], genome_file["architecture"]) == (results["genome"], results["architecture"])


@pytest.mark.slow
def test_predict_reads_stdin_and_prints_one_json_object_per_line(run_dir, retrained, monkeypatch, capsys):
    model_dir = run_dir / "retrain" / "model"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(EXPRESSIONS).encode() + b"\n")))
    assert main(["predict", str(model_dir), "--json"]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["text"] for p in predictions] == EXPRESSIONS
    expected = load_model(model_dir).probabilities(EXPRESSIONS)
    for prediction, row in zip(predictions, expected):
        assert prediction["label"] == str(int(row.argmax()))
        assert prediction["probability"] == pytest.approx(row.max())
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_predict_reads_a_file_and_prints_label_and_probability(run_dir, retrained, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(EXPRESSIONS * 30) + "\n")  # more lines than one prediction batch
    assert main(["predict", str(run_dir / "retrain" / "model"), str(texts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 90
    label, probability = lines[0].split("\t")
    assert label in [str(digit) for digit in range(10)] and 0 < float(probability) <= 1
    assert lines[0] == lines[3], "the same text gets the same prediction in any batch"


@pytest.mark.slow
def test_retrain_cli_with_validation_exports_the_best_genome_first_seed(run_dir, tmp_path, capsys):
    run = copy_of_search(run_dir, tmp_path)
    assert main(["retrain", str(run), "--seeds", "1", "--steps", "5", "--with-validation", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    results = json.loads((run / "retrain" / "results.json").read_text())
    assert results["with_validation"] and results["exported"] == {**results["exported"], "rank": 0, "seed": 0}
    assert results["test_accuracy_std"] is None and len(results["test_accuracies"]) == 1  # undefined over one seed
    assert (run / "retrain" / "model" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_missing_or_invalid_directories_get_clear_errors(run_dir, retrained, tmp_path, capsys):
    assert main(["retrain", str(tmp_path / "missing")]) == 2
    assert "not a search run directory: missing config.json, history.jsonl, tokenizer.json, task.json" in capsys.readouterr().err
    assert main(["retrain", str(copy_of_search(run_dir, tmp_path)), "--top-k", "9"]) == 2
    assert "top-k 9 asked, but the run has only" in capsys.readouterr().err
    changed = copy_of_search(run_dir, tmp_path / "changed")
    task_file = json.loads((changed / "task.json").read_text())
    (changed / "task.json").write_text(json.dumps({**task_file, "label_names": list("abcdefghij")}))
    assert main(["retrain", str(changed)]) == 2
    assert "changed since its search" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing")]) == 2
    assert "is not an exported model: missing genome.json, model.json, tokenizer.json, params" in capsys.readouterr().err
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes(b"[SM 1 2 ]\n[MAX 3 \xe9 ]\n")
    assert main(["predict", str(run_dir / "retrain" / "model"), str(not_utf8)]) == 2
    assert "latin1.txt: line 2 is not UTF-8" in capsys.readouterr().err


def test_refit_steps_keep_the_epochs_of_the_median_best_step_at_whole_calls():
    assert refit_steps([100, 300, 200], 900, 100, 25) == 225  # 200 steps over 900 examples = 222 over 1,000
    assert refit_steps([50, 100], 1000, 0, 25) == 75  # median 75
    assert refit_steps([5, 5], 1000, 10, 25) == 25  # at least one call


@pytest.mark.slow
def test_refit_trains_the_chosen_genome_again_on_train_and_validation(run_dir, tmp_path):
    """A refit after a one-genome retrain is the --with-validation retrain of that genome for the refit's steps:
    the same parameters and test accuracies. With several genomes, validation chooses which one is refitted."""
    refitted = retrain(copy_of_search(run_dir, tmp_path / "refit"), top_k=1, num_seeds=2, steps=10, refit=True,
                       progress=False)
    results = refitted.results
    task = load_task(CONFIG)
    steps = refit_steps(results["genomes"][0]["best_steps"], len(task.train.labels), len(task.validation.labels), 5)
    assert results["refit"]["steps"] == steps and results["refit"]["rank"] == 0
    reference = retrain(copy_of_search(run_dir, tmp_path / "reference"), top_k=1, num_seeds=2, steps=steps,
                        with_validation=True, progress=False)
    for a, b in zip(jax.tree.leaves(refitted.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(a, b)
    assert results["test_accuracies"] == results["refit"]["test_accuracies"] == reference.results["test_accuracies"]
    assert results["validation_accuracies"] == results["genomes"][0]["validation_accuracies"]  # before the refit
    exported = results["exported"]
    assert exported["refit"] and exported["best_step"] == steps
    logits = load_model(tmp_path / "refit" / "retrain" / "model").logits(task.test.tokens)
    assert np.mean(logits.argmax(-1) == task.test.labels) == pytest.approx(exported["test_accuracy"])
    assert exported["test_accuracy"] == results["test_accuracies"][exported["seed"]]

    two = retrain(copy_of_search(run_dir, tmp_path / "two"), top_k=2, num_seeds=2, steps=10, refit=True,
                  progress=False).results
    mean_validation = [np.mean(g["validation_accuracies"]) for g in two["genomes"]]
    assert two["refit"]["rank"] == two["exported"]["rank"] == int(np.argmax(mean_validation))
    assert two["genome"] == two["genomes"][two["refit"]["rank"]]["genome"]
    assert two["exported"]["refit"] and two["exported"]["test_accuracy"] in two["refit"]["test_accuracies"]


@pytest.mark.slow
def test_refit_is_the_default_where_the_search_set_steps_by_epochs(run_dir, retrained, tmp_path, capsys):
    assert retrained.results["refit"] is None  # the built-in task's search: fixed steps
    run = copy_of_search(run_dir, tmp_path)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["epochs"] = 1.0
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["retrain", str(run), "--seeds", "1", "--steps", "5", "--quiet"]) == 0
    assert "refit rank 0 on train + validation" in capsys.readouterr().out
    assert json.loads((run / "retrain" / "results.json").read_text())["refit"]["steps"] == 5
    assert main(["retrain", str(run), "--seeds", "1", "--steps", "5", "--refit", "--with-validation"]) == 2
    assert "--refit or --with-validation, not both" in capsys.readouterr().err


def test_top_genomes_are_distinct_best_first_and_skip_diverged():
    history = [{"id": 0, "genome": [1], "fitness": 0.5, "diverged": False},
               {"id": 1, "genome": [2], "fitness": None, "diverged": True},
               {"id": 2, "genome": [1], "fitness": 0.7, "diverged": False},
               {"id": 3, "genome": [3], "fitness": 0.7, "diverged": False},
               {"id": 4, "genome": [4], "fitness": 0.6, "diverged": False}]
    assert [r["id"] for r in top_genomes(history, 3)] == [2, 3, 4]
    with pytest.raises(ValueError, match="only 3 distinct genomes"):
        top_genomes(history, 4)


@pytest.mark.slow
def test_test_labels_pick_no_step_seed_or_genome(run_dir, retrained, tmp_path, monkeypatch):
    """Retraining again with every test label changed gives other test accuracies, but the same kept steps,
    validation accuracies, chosen genome and seed, and exported parameters."""
    import evonas.retrain

    def with_other_test_labels(config):
        task = load_task(config)
        test = dataclasses.replace(task.test, labels=(task.test.labels + 1) % task.num_classes)
        return dataclasses.replace(task, test=test)

    monkeypatch.setattr(evonas.retrain, "load_task", with_other_test_labels)
    other = retrain(copy_of_search(run_dir, tmp_path / "run"), top_k=2, num_seeds=2, steps=10, progress=False)
    for mine, theirs in zip(retrained.results["genomes"], other.results["genomes"]):
        assert mine["best_steps"] == theirs["best_steps"]
        assert mine["validation_accuracies"] == theirs["validation_accuracies"]
    assert retrained.results["exported"]["rank"] == other.results["exported"]["rank"]
    assert retrained.results["exported"]["seed"] == other.results["exported"]["seed"]
    for a, b in zip(jax.tree.leaves(retrained.params), jax.tree.leaves(other.params)):
        np.testing.assert_array_equal(a, b)
    assert [g["test_accuracies"] for g in retrained.results["genomes"]] != \
        [g["test_accuracies"] for g in other.results["genomes"]], "the changed test labels were read"
