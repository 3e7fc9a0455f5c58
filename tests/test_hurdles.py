"""Progressive hurdles: who passes a stage, what a stopped member keeps, and a search that uses them."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from evonas.data import listops_task
from evonas.errors import ConfigError
from evonas.hurdles import Hurdles, passing
from evonas.member import TrainConfig
from evonas.options import SearchConfig
from evonas.population import Population
from evonas.search import run_search
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel


def reference_passing(scores, training, quantile):
    """The hurdle rule written out plainly: the mean, or the linearly interpolated quantile, of the finite scores
    of the members training; a member training passes if its finite score is at least that."""
    values = sorted(float(s) for s, t in zip(scores, training) if t and math.isfinite(s))
    if not values:
        return [False] * len(scores)
    if quantile is None:
        height = math.fsum(values) / len(values)
    else:
        position = quantile * (len(values) - 1)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        height = values[low] + (values[high] - values[low]) * (position - low)
    return [bool(t) and math.isfinite(s) and s >= height for s, t in zip(scores, training)]


@pytest.mark.parametrize("quantile", [None, 0.0, 0.25, 0.5, 0.75, 1.0])
def test_members_pass_a_hurdle_as_the_plain_reference_says(quantile):
    rng = np.random.default_rng(0)
    for trial in range(200):
        num = int(rng.integers(1, 12))
        scores = rng.choice([0.1, 0.25, 0.5, 0.6, 0.9], num) if trial % 2 else rng.random(num)  # ties, or none
        scores[rng.random(num) < 0.15] = rng.choice([np.nan, -np.inf, np.inf])  # diverged members
        training = rng.random(num) < 0.8
        got = passing(scores, training, quantile)
        assert got.tolist() == reference_passing(scores, training, quantile), (scores, training)
        assert not (got & ~training).any(), "a stopped member never comes back"


def test_a_hurdle_of_the_mean_stops_those_below_it_and_never_a_lone_member():
    scores = np.array([0.2, 0.4, 0.6, 0.8, 0.99])
    training = np.array([True, True, True, True, False])
    np.testing.assert_array_equal(passing(scores, training, None), [False, False, True, True, False])
    np.testing.assert_array_equal(passing(scores, training, 0.75), [False, False, False, True, False])
    np.testing.assert_array_equal(passing(np.array([0.3]), np.array([True]), 1.0), [True])
    np.testing.assert_array_equal(passing(np.array([np.nan, 0.1]), np.array([True, True]), None), [False, True])


def test_hurdle_options_are_checked_and_set_the_call_size():
    config = SearchConfig(steps=150, hurdle_steps=[20, 60], hurdle_quantile=1)
    assert config.hurdle_steps == (20, 60) and config.hurdles() == Hurdles((20, 60), 1.0)
    assert config.train_config().steps_per_call == 5, "every hurdle falls between two calls"
    assert SearchConfig(hurdle_steps=25).hurdle_steps == (25,) and SearchConfig().hurdles() is None
    for values, message in [({"hurdle_steps": [150]}, r"--hurdle-steps \(150\) must be below --steps \(150\)"),
                            ({"hurdle_steps": [50, 25]}, r"--hurdle-steps must increase, got \[50, 25\]"),
                            ({"hurdle_steps": []}, "--hurdle-steps must be an integer or a list of integers"),
                            ({"hurdle_steps": [0]}, "--hurdle-steps must be an integer of at least 1, got 0"),
                            ({"hurdle_quantile": 0.5}, "--hurdle-quantile sets how high hurdles are, but"),
                            ({"hurdle_steps": 5, "hurdle_quantile": 1.5}, "--hurdle-quantile must be a number from 0")]:
        with pytest.raises(ConfigError, match=message):
            SearchConfig(**values)
    with pytest.raises(ValueError, match="multiple of steps_per_call 5"):
        Hurdles((12,)).check(20, 5)


@pytest.fixture(scope="module", params=["member", "grouped"])
def setting(request):
    task = listops_task(seed=3, num_train=256, num_validation=64, num_test=16, max_length=16, max_depth=2)
    space = text_classifier_space(max_blocks=1, ops=("conv3", "gru"), widths=(16,), heads=(1,))
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, TrainConfig(batch_size=16, steps_per_call=5, form=request.param))
    genomes = np.array(space.sample(jax.random.key(0), 5))
    genomes[:, space.index("learning_rate")] = len(space.gene("learning_rate").choices) - 1  # steps that show
    return task, population, genomes


def fit(setting, steps, hurdles=None, chunk_size=8):
    task, population, genomes = setting
    return population.fit(jax.random.split(jax.random.key(1), len(genomes)), genomes, population.put_split(task.train),
                          {"validation": population.put_split(task.validation)}, jax.random.key(2), steps,
                          chunk_size, keep_params=True, hurdles=hurdles)


@pytest.mark.slow
def test_a_stopped_member_keeps_its_parameters_and_fitness_of_the_stop(setting):
    """Members stopped at the hurdle (step 5) hold the parameters and validation accuracy of a run stopped there,
    the others those of a run that never stopped; no recompilation. (That the hurdles judge a whole generation
    whatever its chunks is tested through a search below.)"""
    at_stop, full = fit(setting, 5), fit(setting, 15)
    hurdled = fit(setting, 15, hurdles=Hurdles((5,)))
    expected = passing(at_stop["validation_accuracy"], np.ones(len(at_stop["steps"]), bool), None)
    assert 0 < expected.sum() < len(expected), "the setting must stop some members and keep others"
    np.testing.assert_array_equal(hurdled["steps"], np.where(expected, 15, 5))
    for member, kept in enumerate(expected):
        reference = full if kept else at_stop
        assert hurdled["validation_accuracy"][member] == reference["validation_accuracy"][member]
        for mine, theirs, before in zip(*(jax.tree.leaves(r["params"]) for r in (hurdled, reference, at_stop))):
            np.testing.assert_array_equal(mine[member], theirs[member], err_msg=f"member {member}")
        changed = any(not np.array_equal(a[member], b[member])
                      for a, b in zip(jax.tree.leaves(hurdled["params"]), jax.tree.leaves(at_stop["params"])))
        assert changed == kept, f"member {member}: only members that passed train on"
        assert np.isnan(hurdled["losses"][member, 5:]).all() != kept
        np.testing.assert_array_equal(hurdled["losses"][member, :5], at_stop["losses"][member])
    assert setting[1].traces == 3, "init, train and evaluate compile once, hurdles or not"


TINY_SPACE = {"max_blocks": 2, "ops": ["identity", "conv3", "gru"], "activations": ["relu"], "norms": ["none"],
              "widths": [16], "heads": [1], "ffn_expansions": [1], "dropouts": [0.0], "positionals": ["none"],
              "poolings": ["mean"], "learning_rates": [0.001, 0.01], "weight_decays": [0.0], "optimizers": ["adamw"]}


@pytest.mark.slow
def test_search_with_hurdles_records_each_childs_steps_and_stops_some(tmp_path):
    config = SearchConfig(space=TINY_SPACE, num_children=8, children_per_generation=4, population_size=4,
                          sample_size=2, steps=6, steps_per_call=6, batch_size=8, hurdle_steps=[2, 4],
                          hurdle_quantile=0.5, listops={"num_train": 200, "num_validation": 100, "num_test": 20, "max_length": 12})
    summary = run_search(config, tmp_path / "run", progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    steps = [r["steps"] for r in history]
    assert set(steps) <= {2, 4, 6} and 2 in steps and 6 in steps, steps
    assert [r["hurdle_stopped"] for r in history] == [s < 6 for s in steps]
    for generation in (0, 1):  # half of those training pass each hurdle (ties aside)
        mine = [s for r, s in zip(history, steps) if r["generation"] == generation]
        assert 1 <= sum(s > 2 for s in mine) <= 3
    assert summary["train_steps"] == sum(steps) < 8 * 6
    assert summary["compilations"] == 3
    again = run_search(dataclasses.replace(config, memory_budget_gb=1e-6), tmp_path / "again", progress=False)  # one child at a time: the hurdles still judge whole generations
    assert (tmp_path / "again" / "history.jsonl").read_bytes() == (tmp_path / "run" / "history.jsonl").read_bytes()
    assert again["compilations"] == 3
