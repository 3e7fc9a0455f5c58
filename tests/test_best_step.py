"""Retraining's learning-rate schedule, and its keeping of each member's best validation step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evonas.data import listops_task
from evonas.member import TrainConfig
from evonas.optimizers import lr_schedule, make_optimizer
from evonas.population import Population, keep_best
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel


def test_schedule_warms_up_from_zero_then_decays_to_zero():
    schedule = lr_schedule(100, 0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(55)) == pytest.approx(0.5, abs=1e-6)  # half way through the cosine
    assert float(schedule(99)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 89 / 90)), abs=1e-7)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    values = np.array([float(schedule(t)) for t in range(101)])
    assert (np.diff(values[:11]) > 0).all() and (np.diff(values[10:]) < 0).all()
    assert float(lr_schedule(100, 0.0)(0)) == 1.0, "no warm-up: the decay starts at the peak"


@pytest.mark.parametrize("name", ["adamw", "lion", "sgd"])
def test_optimizer_steps_with_the_traced_rate_times_the_schedule(name):
    """The step count comes from the optimizer state: one compiled update serves every rate and step. Each
    update, from a state that saw only zero gradients, is the rate times the schedule at its count times the
    constant-rate optimizer's first update."""
    schedule = lr_schedule(20, 0.25)
    params, grads = {"w": jnp.zeros(3)}, {"w": jnp.array([0.1, -0.2, 0.05])}

    @jax.jit
    def update_at(learning_rate, count):
        optimizer = make_optimizer(name, learning_rate, 0.0, 1.0, schedule)
        state = optimizer.init(params)
        state = jax.lax.fori_loop(0, count, lambda _, s: optimizer.update(jax.tree.map(jnp.zeros_like, grads), s,
                                                                          params)[1], state)
        return optimizer.update(grads, state, params)[0]["w"]

    constant = make_optimizer(name, 1.0, 0.0, 1.0)
    unit = constant.update(grads, constant.init(params), params)[0]["w"]
    for learning_rate, count in ((0.01, 0), (0.01, 5), (0.003, 12), (0.003, 19)):
        factor = learning_rate * float(schedule(count))
        if name == "adamw":  # Adam's bias correction sees `count` zero gradients before this one
            unit_at = constant.update(grads, jax.lax.fori_loop(0, count, lambda _, s: constant.update(
                jax.tree.map(jnp.zeros_like, grads), s, params)[1], constant.init(params)), params)[0]["w"]
        else:
            unit_at = unit
        np.testing.assert_allclose(update_at(learning_rate, count), factor * unit_at, rtol=1e-5, atol=1e-12,
                                   err_msg=f"{name} rate {learning_rate} count {count}")
    assert not np.asarray(update_at(0.01, 0)).any(), "step 0 of the warm-up moves nothing"


def test_keep_best_takes_a_better_finite_score_and_keeps_ties_earlier():
    best = ({"w": jnp.zeros((4, 2))}, jnp.array([0.5, 0.5, 0.5, -jnp.inf]), jnp.array([10, 10, 10, 0], jnp.int32))
    params = {"w": jnp.ones((4, 2))}
    accuracy, loss = jnp.array([0.6, 0.5, 0.9, 0.1]), jnp.array([1.0, 1.0, jnp.nan, 2.0])
    kept, kept_accuracy, kept_step = keep_best(*best, params, accuracy, loss, np.int32(20))
    np.testing.assert_array_equal(kept["w"][:, 0], [1, 0, 0, 1])  # better, tie, diverged, first finite score
    np.testing.assert_array_equal(kept_accuracy, np.array([0.6, 0.5, 0.5, 0.1], np.float32))
    np.testing.assert_array_equal(kept_step, [20, 10, 10, 20])


@pytest.fixture(scope="module")
def setting():
    task = listops_task(seed=3, num_train=256, num_validation=64, num_test=64, max_length=16, max_depth=2)
    space = text_classifier_space(max_blocks=1, ops=("conv3",), widths=(16,), heads=(1,))
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, TrainConfig(batch_size=16, steps_per_call=5, schedule_steps=40,
                                               warmup_fraction=0.0))
    genomes = np.array(space.sample(jax.random.key(0), 4))
    genomes[:, space.index("optimizer")] = space.gene("optimizer").choices.index("sgd")
    genomes[:, space.index("learning_rate")] = len(space.gene("learning_rate").choices) - 1  # too high for SGD
    return task, population, genomes


def fit(setting, test_labels=None):
    task, population, genomes = setting
    test = task.test if test_labels is None else dataclasses.replace(task.test, labels=test_labels)
    splits = {"validation": population.put_split(task.validation), "test": population.put_split(test)}
    return population.fit(jax.random.split(jax.random.key(1), len(genomes)), genomes,
                          population.put_split(task.train), splits, jax.random.key(2), 40, 4, keep_params=True,
                          select=splits["validation"], eval_every=10)


@pytest.mark.slow
def test_kept_parameters_are_those_of_the_best_validation_step(setting):
    """Each member's kept parameters are those it had after its best validation step: the same as a run stopped
    there (same schedule, keys and batches), and they score the recorded best validation accuracy."""
    task, population, genomes = setting
    fitted = fit(setting)
    np.testing.assert_array_equal(fitted["validation_accuracy"], fitted["best_accuracy"])
    stopped = {steps: population.fit(jax.random.split(jax.random.key(1), len(genomes)), genomes,
                                     population.put_split(task.train),
                                     {"validation": population.put_split(task.validation)}, jax.random.key(2),
                                     steps, 4, keep_params=True) for steps in (10, 20, 30, 40)}
    for member, step in enumerate(fitted["best_step"]):
        assert step in stopped, f"member {member}: best step {step} is not a validation step"
        for kept, reference in zip(jax.tree.leaves(fitted["params"]), jax.tree.leaves(stopped[step]["params"])):
            np.testing.assert_array_equal(kept[member], reference[member], err_msg=f"member {member}")
        assert fitted["best_accuracy"][member] == stopped[step]["validation_accuracy"][member]
        assert fitted["best_accuracy"][member] == max(stopped[s]["validation_accuracy"][member] for s in stopped)
    last = stopped[40]["validation_accuracy"]
    assert (fitted["best_accuracy"] > last).any(), "a too-high rate: some member's last step is not its best"


@pytest.mark.slow
def test_test_split_picks_nothing_and_fit_is_deterministic(setting):
    first, again = fit(setting), fit(setting)
    flipped = fit(setting, test_labels=(setting[0].test.labels + 1) % setting[0].num_classes)
    for other in (again, flipped):
        np.testing.assert_array_equal(first["best_step"], other["best_step"])
        for a, b in zip(jax.tree.leaves(first["params"]), jax.tree.leaves(other["params"])):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first["test_accuracy"], again["test_accuracy"])
    assert not np.array_equal(first["test_accuracy"], flipped["test_accuracy"]), "the flipped labels were read"
