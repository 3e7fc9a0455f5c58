"""The cheap fitness predictor: a ridge ranker on one-hot genes, and the pool selection built on it."""

import json

import jax
import numpy as np
import pytest
from helpers import load_experiment
from scipy import stats

from evonas import predictor, strategies
from evonas.options import SearchConfig
from evonas.search import run_search
from evonas.space import text_classifier_space

SPACE = text_classifier_space()
TINY_SPACE = {"max_blocks": 2, "ops": ["identity", "conv3"], "activations": ["relu"], "norms": ["none"], "widths": [16],
              "heads": [1], "ffn_expansions": [1], "dropouts": [0.0], "positionals": ["none"], "poolings": ["mean"],
              "learning_rates": [0.001, 0.01], "weight_decays": [0.0], "optimizers": ["adamw"]}
TINY = {"space": TINY_SPACE, "num_children": 12, "children_per_generation": 2, "population_size": 4, "sample_size": 2,
        "steps": 2, "steps_per_call": 2, "batch_size": 8,
        "listops": {"num_train": 64, "num_validation": 32, "num_test": 8, "max_length": 12}}


def test_features_are_one_hot_per_gene_with_a_choice():
    genomes = np.asarray(SPACE.sample(jax.random.key(0), 5))
    x = predictor.features(genomes, SPACE)
    varying = SPACE.num_choices[SPACE.num_choices > 1]
    assert x.shape == (5, varying.sum())
    np.testing.assert_array_equal(x.sum(axis=1), len(varying))  # one hot column per varying gene


def test_ranker_recovers_a_planted_linear_fitness():
    key_train, key_test, key_weights = jax.random.split(jax.random.key(1), 3)
    train, test = (np.asarray(SPACE.sample(k, 300)) for k in (key_train, key_test))
    planted = np.asarray(jax.random.normal(key_weights, (predictor.features(train[:1], SPACE).shape[1],)))
    noise = np.random.default_rng(0).normal(0, 0.1, len(train))
    ranker = predictor.fit(predictor.features(train, SPACE), predictor.features(train, SPACE) @ planted + noise)
    predicted = predictor.predict(ranker, predictor.features(test, SPACE))
    assert stats.spearmanr(predicted, predictor.features(test, SPACE) @ planted).statistic > 0.9


def test_choose_takes_the_top_predicted_new_and_distinct_genomes():
    genomes = np.array([[0, 0], [1, 1], [1, 1], [2, 0], [0, 1], [2, 2]])
    scores = np.array([0.1, 0.9, 0.9, 0.8, 0.5, 0.95])
    np.testing.assert_array_equal(predictor.choose(scores, genomes, {(2, 2)}, 3), [1, 3, 4])  # (2, 2) seen; row 2 repeats
    np.testing.assert_array_equal(predictor.choose(scores, genomes, set(), 2), [5, 1])
    np.testing.assert_array_equal(predictor.choose(scores, genomes, {(2, 2)}, 6), [1, 3, 4, 0, 5, 2])


def history_of(genomes, fitness):
    return [{"id": i, "genome": [int(g) for g in genome], "fitness": float(f), "diverged": False}
            for i, (genome, f) in enumerate(zip(genomes, fitness, strict=True))]


@pytest.mark.slow  # compiles the strategy's ask on the full space
def test_propose_keeps_the_top_predicted_of_the_pool_with_their_own_parents():
    strategy = strategies.AgingEvolution(SPACE, population_size=8, sample_size=2, num_children_per_generation=4,
                                         mutation_rate=0.1, crossover_rate=0.5)
    state, key = strategy.init(), jax.random.key(2)
    first = np.asarray(strategy.ask(key, state)[0])
    for generation in range(2):  # fill the population, so that children are bred and have parents
        children, _ = strategy.ask(jax.random.fold_in(key, generation), state)
        state = strategy.tell(state, children, jnp_fitness(children))
    history = history_of(np.asarray(SPACE.sample(jax.random.key(3), 40)), np.linspace(0, 1, 40))

    for pool, min_records in ((1, 2), (4, 41)):  # off, or too few records: the strategy's own children
        children, parents, predicted = predictor.propose(strategy, key, state, history, SPACE, pool, min_records)
        assert predicted is None
        np.testing.assert_array_equal(children, strategy.ask(key, state)[0])
        np.testing.assert_array_equal(parents, strategy.ask(key, state)[1])

    children, parents, predicted = predictor.propose(strategy, key, state, history, SPACE, pool=4, min_records=40)
    pool = [strategy.ask(key if i == 0 else jax.random.fold_in(key, i), state) for i in range(4)]
    pool_genomes = np.concatenate([np.asarray(c) for c, _ in pool])
    pool_parents = np.concatenate([np.asarray(p) for _, p in pool])
    scores = predictor.predict(predictor.fit_history(history, SPACE, 40), predictor.features(pool_genomes, SPACE))
    assert np.asarray(children).shape == (4, SPACE.num_genes) and not np.array_equal(children, first)
    np.testing.assert_allclose(predicted, np.sort(scores)[::-1][:4])  # the pool's genomes are distinct and new here
    for child, child_parents in zip(children, parents, strict=True):
        row = np.flatnonzero((pool_genomes == child).all(axis=1))[0]
        np.testing.assert_array_equal(child_parents, pool_parents[row])
    assert (np.asarray(parents)[:, 0] >= 0).all()  # bred children, so they name real parents


def jnp_fitness(children):
    return np.asarray(children, np.float32).sum(axis=1) / 10


def test_diverged_and_infeasible_children_are_not_fitted():
    genomes = np.asarray(SPACE.sample(jax.random.key(4), 6))
    history = history_of(genomes, np.arange(6.0))
    history[0]["diverged"], history[1]["fitness"] = True, None
    assert predictor.fit_history(history, SPACE, 5) is None  # 4 candidates
    assert predictor.fit_history(history, SPACE, 4) is not None


def read_history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_predictor_changes_the_history_of_the_default_only_once_it_ranks(tmp_path):
    run_search(SearchConfig(**TINY), tmp_path / "plain", progress=False)
    run_search(SearchConfig(**TINY, predictor_pool=3, predictor_min_records=4), tmp_path / "ranked", progress=False)
    plain, ranked = (tmp_path / "plain" / "history.jsonl").read_bytes(), read_history(tmp_path / "ranked")
    assert (tmp_path / "ranked" / "history.jsonl").read_bytes().splitlines()[:4] == plain.splitlines()[:4]
    assert all("predicted_fitness" in r for r in ranked[4:]) and "predicted_fitness" not in ranked[0]
    assert len({tuple(r["genome"]) for r in ranked}) > len({tuple(r["genome"]) for r in read_history(tmp_path / "plain")})


def test_study_predicts_each_generation_from_the_earlier_ones_only(tmp_path):
    import dataclasses

    study = load_experiment("predictor_study")
    config = SearchConfig(population_size=16, children_per_generation=8, num_children=48)
    space = config.search_space()
    (tmp_path / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "space": space.to_json()}))
    genomes = np.asarray(space.sample(jax.random.key(5), 48))
    planted = np.random.default_rng(1).normal(size=predictor.features(genomes[:1], space).shape[1])
    history = history_of(genomes, predictor.features(genomes, space) @ planted)
    for record in history:
        record["generation"], record["params"], record["flops"] = record["id"] // 8, 1, record["id"]
    history[-1] |= {"diverged": True, "fitness": None}  # not a candidate: neither fitted nor scored
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))

    result = study.study_run(tmp_path, early_steps=None)
    assert result["predicted_generations"] == [2, 3, 4, 5]  # 16 candidates (the population) before generation 2
    ridge = result["signals"]["ridge_one_hot"]
    assert ridge["children"] == 31 and ridge["within_generation_mean"] > 0.3 and ridge["pooled"] > 0.3
    assert result["signals"]["params"]["pooled"] is None  # a constant signal has no rank correlation
