"""Finishing the winner: `evonas retrain --tune N` (training genes picked on validation) and `--folds K`."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from evonas import data, folds, tune
from evonas import retrain as retrain_module
from evonas.cli import main
from evonas.data import TextSplit
from evonas.errors import InputError
from evonas.options import SearchConfig
from evonas.retrain import retrain
from evonas.search import load_task

SPACE = {"max_blocks": 1, "ops": ["conv3"], "widths": [16], "heads": [1], "activations": ["relu"],
         "norms": ["layernorm"], "dropouts": [0.0], "positionals": ["none"], "poolings": ["mean"],
         "optimizers": ["adamw"], "learning_rates": [1e-3, 1e-2], "weight_decays": [0.0, 1e-2]}
CONFIG = SearchConfig(num_children=2, children_per_generation=2, population_size=2, sample_size=2, steps=4,
                      steps_per_call=2, space=SPACE,
                      listops={"num_train": 60, "num_validation": 20, "num_test": 20, "max_length": 16})


def made_up_run(path, config=CONFIG):
    """A finished run directory whose history is made up (its genome: the space's first choices), so no search
    trains; retrain reads nothing else of a search."""
    path.mkdir()
    space = config.search_space()
    (path / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "space": space.to_json()}))
    data.write_task_files(data.listops_task(**config.listops), path)
    record = {"id": 0, "generation": 0, "genome": [0] * space.num_genes, "parents": [], "fitness": 0.5,
              "val_accuracy": 0.5, "diverged": False}
    (path / "history.jsonl").write_text(json.dumps(record) + "\n")
    (path / "checkpoints" / "1").mkdir(parents=True)
    (path / "summary.json").write_text("{}")
    return path


def test_folds_partition_the_data_deterministically_from_the_seed():
    indices = folds.fold_indices(23, 4, seed=7)
    everything = np.concatenate(indices)
    assert sorted(everything.tolist()) == list(range(23)), "disjoint and covering"
    assert sorted(len(f) for f in indices) == [5, 6, 6, 6]
    assert all(np.array_equal(a, b) for a, b in zip(indices, folds.fold_indices(23, 4, seed=7)))
    assert not all(np.array_equal(a, b) for a, b in zip(indices, folds.fold_indices(23, 4, seed=8)))


def test_each_fold_tests_on_its_own_fold_and_carves_validation_from_the_rest():
    labelled = TextSplit(np.arange(40, dtype=np.int32).reshape(20, 2) + 1, np.arange(20, dtype=np.int32))
    indices = folds.fold_indices(20, 5, seed=0)
    tested = []
    for fold in range(5):
        train, validation, test = folds.fold_splits(labelled, indices, fold, share=0.25, seed=0)
        assert test.labels.tolist() == indices[fold].tolist()  # labels are the example indices here
        assert len(validation.labels) == 4 and len(train.labels) == 12  # a quarter of the other 16
        assert sorted([*train.labels, *validation.labels, *test.labels]) == list(range(20))
        np.testing.assert_array_equal(train.tokens[:, 0], 2 * train.labels + 1)  # tokens stay with their labels
        tested += test.labels.tolist()
    assert sorted(tested) == list(range(20)), "every example is tested exactly once"


def test_bad_fold_counts_are_input_errors():
    with pytest.raises(InputError, match="--folds must be at least 2"):
        folds.fold_indices(10, 1, seed=0)
    with pytest.raises(InputError, match="--folds 11 asked, but the task has only 10"):
        folds.fold_indices(10, 11, seed=0)
    with pytest.raises(InputError, match="fewer than 2 examples"):
        folds.fold_splits(TextSplit(np.ones((2, 2), np.int32), np.zeros(2, np.int32)),
                          folds.fold_indices(2, 2, seed=0), 0, share=0.5, seed=0)


def test_tuning_settings_change_only_the_training_genes_nearest_first():
    space = dataclasses.replace(CONFIG, space={**SPACE, "learning_rates": [1e-4, 1e-3, 1e-2],
                                               "weight_decays": [0.0, 1e-2]}).search_space()
    genome = space.encode({**space.decode([0] * space.num_genes), "learning_rate": 1e-3})
    candidates = tune.settings(space, genome, 4)
    assert candidates[0].tolist() == genome.tolist(), "the winner's own setting first"
    assert [tune.describe(space, c) for c in candidates[1:]] == [
        {"learning_rate": 1e-4, "weight_decay": 0.0}, {"learning_rate": 1e-3, "weight_decay": 1e-2},
        {"learning_rate": 1e-2, "weight_decay": 0.0}]  # one index step away, in grid order
    others = [i for i, name in enumerate(space.names) if name not in tune.TRAINING_GENES]
    assert (candidates[:, others] == genome[others]).all()
    with pytest.raises(InputError, match="--tune 7 asked, but the space has only 6 settings"):
        tune.settings(space, genome, 7)


def test_best_setting_is_the_best_validation_one_and_never_a_diverged_one():
    assert tune.best_setting(np.array([0.5, 0.7, 0.6]), np.array([False, False, False])) == 1
    assert tune.best_setting(np.array([0.5, 0.7, 0.6]), np.array([False, True, False])) == 2
    assert tune.best_setting(np.array([0.6, 0.6]), np.array([False, False])) == 0, "ties keep the own setting"


@pytest.mark.slow
@pytest.mark.parametrize("refit", [False, True])
def test_fold_accuracies_are_those_of_each_folds_kept_parameters(tmp_path, monkeypatch, capsys, refit):
    """Each fold's test accuracies, recomputed here from its kept (or, with a refit, refitted) parameters."""
    run = made_up_run(tmp_path / "run")
    fitted = retrain(run, num_seeds=2, steps=4, progress=False, folds=3, refit=refit)
    results = json.loads((run / "retrain" / "results.json").read_text())
    assert all((f["refit_steps"] is not None) == refit for f in results["folds"])
    assert results == json.loads(json.dumps(fitted.results))
    assert results["num_folds"] == 3 and len(results["folds"]) == 3 and results["exported"] is None
    accuracies = [f["test_accuracy"] for f in results["folds"]]
    assert accuracies == pytest.approx([np.mean(f["test_accuracies"]) for f in results["folds"]])  # over seeds
    assert results["test_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert results["test_accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert not (run / "retrain" / "model").exists()
    monkeypatch.setattr(retrain_module, "retrain", lambda *args, **kwargs: fitted)
    assert main(["retrain", str(run), "--folds", "3", "--seeds", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"3 folds: test accuracy {results['test_accuracy_mean']:.4f} ± {results['test_accuracy_std']:.4f}" in printed

    task = load_task(CONFIG)
    labelled = folds.labelled_data(task)
    rng_order = np.random.default_rng(CONFIG.task_seed).permutation(100)  # the folds, computed here on their own
    apply = jax.jit(fitted.population.model.apply)
    for fold, params in enumerate(fitted.fold_params):
        test_rows = np.sort(np.array_split(rng_order, 3)[fold])
        tokens, labels = labelled.tokens[test_rows], labelled.labels[test_rows]
        per_seed = []
        for member in range(2):  # seed m, the one genome
            stored = jax.tree.map(lambda a, m=member: a[m], params)
            logits = apply(stored, fitted.genomes[member], tokens, tokens != 0)
            per_seed.append(float(np.mean(np.asarray(logits).argmax(-1) == labels)))
        assert results["folds"][fold]["test_accuracies"] == pytest.approx(per_seed, abs=1e-6)


@pytest.mark.slow
def test_tuning_picks_by_validation_and_test_labels_change_nothing(tmp_path, monkeypatch):
    run = made_up_run(tmp_path / "run")
    first = retrain(run, num_seeds=1, steps=4, progress=False, tune=3).results
    tuning = first["tuning"][0]
    assert len(tuning["settings"]) == 3 and tuning["settings"][0] == {"learning_rate": 1e-3, "weight_decay": 0.0}
    assert tuning["chosen"] == tune.best_setting(np.array(tuning["validation_accuracies"]),
                                                 np.array(tuning["diverged"]))
    assert tune.describe(CONFIG.search_space(), first["genome"]) == tuning["chosen_setting"], "retrains the choice"
    assert first["genomes"][0]["search_genome"] == [0] * CONFIG.search_space().num_genes

    def relabelled(config):
        task = load_task(config)
        wrong = TextSplit(task.test.tokens, (task.test.labels + 1) % task.num_classes)
        return dataclasses.replace(task, test=wrong)

    monkeypatch.setattr(retrain_module, "load_task", relabelled)
    second = retrain(run, num_seeds=1, steps=4, progress=False, tune=3).results
    assert second["tuning"] == first["tuning"], "test labels pick nothing"
    assert second["test_accuracies"] != first["test_accuracies"], "the test split was changed"
