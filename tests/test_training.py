"""Population training must train each member as its decoded standalone model trains alone, and bfloat16 compute
must stay close to float32. (Apart from tests/test_models.py, so that pytest-xdist runs the two on different
workers.)"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import diverse_genomes

from evonas.data import listops_task
from evonas.member import TrainConfig, loss_fn
from evonas.models import Architecture, TextClassifier
from evonas.ops import OPS
from evonas.optimizers import lr_schedule, make_optimizer
from evonas.population import Population
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel


@pytest.mark.slow
@pytest.mark.parametrize("form,own_keys,schedule_steps,width_views", [
    ("member", False, 0, True), ("member", True, 3, True), ("member", False, 0, False), ("grouped", False, 0, False),
    ("grouped", True, 0, False)])
def test_population_training_matches_each_standalone_model_trained_alone(form, own_keys, schedule_steps, width_views):
    """A few train steps of members with each optimizer (one shared optimizer state) against optax on the
    standalone model, with the same batches and dropout masks: one key for every member, as a search trains
    them, or a key of its own for each, as retraining's seeds; with a constant rate, as a search trains, or
    with retraining's warm-up and decay (over its first 3 steps: rate 0, the peak, then half of it); in the
    member form, with each member's steps on its state cut to its width (`evonas.width_view`) or on the stored
    layout, in two calls, so that what a call writes back is what the next one reads."""
    task = listops_task(seed=1, num_train=64, num_validation=16, num_test=16, max_length=16, max_depth=2)
    # Two widths, one head count: the member form compiles a branch per width and head count, and what this test
    # checks (optimizer states, keys, the schedule) is the same for every one of them (tests/test_models.py
    # checks every width and head count).
    space = text_classifier_space(max_blocks=2, ops=("attention", "conv3", "gru"), widths=(16, 32), heads=(2,))
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    tiles = (("attention", 2), ("conv", 2), ("recurrent", 4))
    population = Population(model, TrainConfig(batch_size=8, steps_per_call=3, form=form, tile_sizes=tiles,
                                               schedule_steps=schedule_steps, warmup_fraction=0.34,
                                               width_view_min_saving=0 if width_views else 2**62))
    schedule = lr_schedule(3, 0.34) if schedule_steps else None
    optimizers = space.gene("optimizer").choices
    genomes = np.array(space.sample(jax.random.key(4), 2 * len(optimizers)))
    genomes[:, space.index("num_blocks")] = len(space.gene("num_blocks").choices) - 1
    genomes[:, space.index("optimizer")] = np.arange(len(genomes)) % len(optimizers)
    genomes[:, space.index("learning_rate")] = len(space.gene("learning_rate").choices) - 1  # steps that show
    genomes = jnp.asarray(genomes)
    states = population.init(jax.random.split(jax.random.key(1), len(genomes)), genomes)
    initial = jax.tree.map(np.asarray, states.params)
    train = population.put_split(task.train)
    keys = jax.random.split(jax.random.key(5), len(genomes)) if own_keys else jax.random.key(5)
    # Two calls: a call's steps run on each member's state cut to its width, written back after the last one.
    states, first = population.train(states, genomes, train, keys, jnp.int32(0))
    states, second = population.train(states, genomes, train, keys, jnp.int32(3))
    losses = np.concatenate([first, second], axis=1)
    for i, genome in enumerate(np.asarray(genomes)):
        key_data, key_dropout = jax.random.split(keys[i] if own_keys else keys)
        arch = Architecture.from_genome(space, genome)
        params = model.extract(arch, jax.tree.map(lambda a, i=i: a[i], initial))
        module = TextClassifier(arch, task.vocab_size, task.max_length, task.num_classes)
        optimizer = make_optimizer(arch.optimizer, arch.learning_rate, arch.weight_decay, TrainConfig().clip_norm,
                                   schedule)
        opt_state = optimizer.init(params)

        @jax.jit  # one compile per model for its 6 steps (the four cases: 136 s eager, 120 s jitted)
        def loss_and_grads(p, tokens, labels, key, module=module):
            return jax.value_and_grad(lambda p: loss_fn(module.apply({"params": p}, tokens, tokens != 0, key),
                                                        labels))(p)

        for step in range(6):
            rows = jax.random.randint(jax.random.fold_in(key_data, step), (8,), 0, len(task.train.labels))
            tokens, labels = jnp.asarray(task.train.tokens)[rows], jnp.asarray(task.train.labels)[rows]
            value, grads = loss_and_grads(params, tokens, labels, jax.random.fold_in(key_dropout, step))
            np.testing.assert_allclose(losses[i, step], value, rtol=1e-5, err_msg=f"member {i} step {step}")
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        trained = model.extract(arch, jax.tree.map(lambda a, i=i: a[i], states.params))
        jax.tree_util.tree_map_with_path(functools.partial(assert_same_trained, f"member {i} ({arch.optimizer})"),
                                         trained, params)


def assert_same_trained(member, path, mine, reference):
    name = jax.tree_util.keystr(path)
    if name.endswith("['qkv']['bias']"):
        # The key bias's true gradient is zero (softmax ignores a shift shared by every key), so Adam and
        # Lion turn its float noise into full-size steps: compare the query and value biases only. Elsewhere
        # too, Adam scales tiny gradients up, so their float noise needs rtol 1e-3 after three steps.
        width = mine.shape[0] // 3
        mine, reference = np.delete(mine, np.s_[width:2 * width]), np.delete(reference, np.s_[width:2 * width])
    np.testing.assert_allclose(mine, reference, rtol=1e-3, atol=1e-5, err_msg=f"{member} {name}")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["member", "grouped"])
def test_bfloat16_compute_stays_close_to_float32(form):
    """bfloat16 forward and backward from float32 weights (what "auto" runs on GPUs and TPUs): losses within 2%
    and gradients pointing the same way (cosine > 0.99) as float32 compute, for members of every op, in both
    population forms."""
    task = listops_task(seed=2, num_train=32, num_validation=8, num_test=8, max_length=16, max_depth=2)
    space = text_classifier_space(max_blocks=2, ops=OPS, widths=(16,), heads=(2,))  # every op; one width compiles faster
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    genomes = diverse_genomes(space, len(OPS), jax.random.key(6))
    tokens, labels = jnp.asarray(task.train.tokens[:16]), jnp.asarray(task.train.labels[:16])
    results = {}
    for dtype in ("float32", "bfloat16"):
        population = Population(model, TrainConfig(compute_dtype=dtype, form=form))
        states = population.init(jax.random.split(jax.random.key(1), len(OPS)), genomes)
        results[dtype] = population.loss_and_grads(states.params, genomes, tokens, labels, jax.random.key(2))
    (loss32, grads32), (loss16, grads16) = results["float32"], results["bfloat16"]
    assert all(jax.tree.leaves(jax.tree.map(lambda g: g.dtype == jnp.float32, grads16)))
    np.testing.assert_allclose(loss16, loss32, rtol=2e-2)
    flat32 = jnp.concatenate([g.reshape(len(OPS), -1) for g in jax.tree.leaves(grads32)], axis=1)
    flat16 = jnp.concatenate([g.reshape(len(OPS), -1) for g in jax.tree.leaves(grads16)], axis=1)
    cosine = (flat32 * flat16).sum(1) / (jnp.linalg.norm(flat32, axis=1) * jnp.linalg.norm(flat16, axis=1))
    assert float(cosine.min()) > 0.99, cosine
    assert float(jnp.abs(loss16 - loss32).max()) > 0  # bfloat16 really was used
