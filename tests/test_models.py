"""The population form must compute exactly what each decoded standalone model computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import diverse_genomes

from evonas import inherit
from evonas.data import listops_task
from evonas.layers import dropout, matmul
from evonas.member import TrainConfig, loss_fn
from evonas.models import Architecture, TextClassifier, count_params, forward_flops, param_count, part_sizes
from evonas.ops import OPS, make_op
from evonas.population import Population
from evonas.space import Gene, SearchSpace, text_classifier_space
from evonas.supernet import PopulationModel

NUM_GENOMES = len(OPS)  # every op; every pooling, width, head count, positional, expansion, norm and final norm
# Two widths and head counts, at most 2 blocks: the member form compiles a branch per width and head count (39 s
# with the 4 x 4 of the full space, 20 s with 2 x 2), and what it computes is the same for every one of them;
# each standalone reference compiles on its own, and a third block only makes each compile longer.
EQUIVALENCE_SPACE = {"max_blocks": 2, "ops": OPS, "widths": (32, 64), "heads": (1, 2),
                     "final_norms": ("layernorm", "rmsnorm", "none"), "head_dropouts": (0.0, 0.5)}


# The grouped form with tiles large enough that members of different widths, heads, kernels, expansions and
# cells share them.
FORMS = {"member": TrainConfig(form="member"),
         "grouped": TrainConfig(form="grouped", tile_sizes=(("attention", 4), ("conv", 4), ("gated_mlp", 4),
                                                            ("recurrent", 8), ("bidirectional", 4)))}


@pytest.fixture(scope="module")
def references():
    """8 members (every op in the first block) and the loss, gradients and init of each one's standalone model on
    one batch."""
    task = listops_task(seed=0, num_train=64, num_validation=16, num_test=16, max_length=24, max_depth=2)
    space = text_classifier_space(**EQUIVALENCE_SPACE)
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    genomes = diverse_genomes(space, NUM_GENOMES, jax.random.key(0))
    states = Population(model).init(jax.random.split(jax.random.key(1), NUM_GENOMES), genomes)
    tokens, labels = jnp.asarray(task.train.tokens[:6]), jnp.asarray(task.train.labels[:6])
    dropout_key = jax.random.key(2)
    archs = [Architecture.from_genome(space, genome) for genome in np.asarray(genomes)]
    params = [model.extract(arch, jax.tree.map(lambda a, i=i: a[i], states.params)) for i, arch in enumerate(archs)]
    modules = [TextClassifier(arch, task.vocab_size, task.max_length, task.num_classes) for arch in archs]

    @jax.jit  # the 8 standalone models side by side in one program: one compile, 40% faster than 8
    def standalone(params):
        def loss(p, module):
            return loss_fn(module.apply({"params": p}, tokens, tokens != 0, dropout_key), labels)

        return [(*jax.value_and_grad(loss)(p, module), module.init(jax.random.key(3), tokens, tokens != 0)["params"])
                for p, module in zip(params, modules)]

    members = [{"arch": arch, "ref_loss": float(ref_loss), "ref_grads": ref_grads, "init": p, "ref_init": ref_init}
               for arch, p, (ref_loss, ref_grads, ref_init) in zip(archs, params, standalone(params))]
    return {"model": model, "genomes": genomes, "states": states, "batch": (tokens, labels, dropout_key),
            "members": members}


@pytest.fixture(scope="module", params=list(FORMS))
def setting(request, references):
    """Each member's loss and gradients from a population form, beside its standalone model's."""
    model = references["model"]
    population = Population(model, FORMS[request.param])
    losses, grads = population.loss_and_grads(references["states"].params, references["genomes"],
                                              *references["batch"])
    members = []
    for i, reference in enumerate(references["members"]):
        member_grads = jax.tree.map(lambda a, i=i: a[i], grads)
        members.append({**reference, "loss": float(losses[i]), "grads": member_grads,
                        "used_grads": model.extract(reference["arch"], member_grads)})
    return members


def mismatched_members(members, rtol=1e-4, atol=1e-6):
    """Indices of members whose loss or any gradient differs from their standalone model's."""
    bad = []
    for i, m in enumerate(members):
        same_loss = np.isclose(m["loss"], m["ref_loss"], rtol=1e-5, atol=0)
        same_grads = all(np.allclose(a, b, rtol=rtol, atol=atol)
                         for a, b in zip(jax.tree.leaves(m["used_grads"]), jax.tree.leaves(m["ref_grads"])))
        if not (same_loss and same_grads):
            bad.append(i)
    return bad


@pytest.mark.slow
def test_population_step_matches_standalone_models(setting):
    assert len(setting) == NUM_GENOMES
    assert {block.op for m in setting for block in m["arch"].blocks} == set(OPS)
    assert {m["arch"].final_norm for m in setting} == {"layernorm", "rmsnorm", "none"}
    assert mismatched_members(setting) == []


@pytest.mark.slow
def test_equivalence_check_catches_one_wrong_member(setting):
    victim = dict(setting[7])
    victim["used_grads"] = jax.tree.map(lambda g: g * 1.001, victim["used_grads"])
    assert mismatched_members(setting[:7] + [victim] + setting[8:]) == [7]
    victim = dict(setting[3], loss=setting[3]["loss"] * (1 + 1e-4))
    assert mismatched_members(setting[:3] + [victim] + setting[4:]) == [3]


@pytest.mark.slow
def test_unused_stored_parameters_get_no_gradient(setting):
    for m in setting:
        total = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(m["grads"]))
        used = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(m["used_grads"]))
        assert total == pytest.approx(used, rel=1e-6)


def test_standalone_model_has_exact_size_and_counts_flops():
    space = text_classifier_space(max_blocks=2)
    genome = space.encode({**space.decode(np.zeros(space.num_genes, np.int32)), "num_blocks": 2,
                           "block0_op": "attention", "block1_op": "conv5", "width": 64})
    arch = Architecture.from_genome(space, genome)
    model = TextClassifier(arch, vocab_size=16, max_length=32, num_classes=10)
    params = model.init(jax.random.key(0), jnp.ones((2, 32), jnp.int32), jnp.ones((2, 32), bool))["params"]
    logits = model.apply({"params": params}, jnp.ones((3, 32), jnp.int32), jnp.ones((3, 32), bool))
    assert logits.shape == (3, 10)
    assert params["block0"]["op"]["qkv"]["kernel"].shape == (64, 192)
    assert params["block1"]["op"]["conv"]["kernel"].shape == (5, 64, 64)
    embed, position, norms, head = 16 * 64, 32 * 64, 2 * (2 * 64) + 2 * 64, 64 * 10 + 10
    attention, conv = 64 * 192 + 192 + 64 * 64 + 64, 5 * 64 * 64 + 64
    assert count_params(params) == embed + position + norms + head + attention + conv
    assert forward_flops(arch, 32, 10) == (8 * 32 * 64 * 64 + 4 * 32 * 32 * 64) + 2 * 32 * 5 * 64 * 64 + 2 * 64 * 10


def test_param_count_is_what_the_standalone_model_holds():
    space = text_classifier_space(max_blocks=3, ops=OPS)
    model = PopulationModel(space, vocab_size=13, max_length=9, num_classes=4)
    for genome in np.asarray(diverse_genomes(space, 3 * len(OPS), jax.random.key(2))):
        arch = Architecture.from_genome(space, genome)
        assert param_count(arch, 13, 9, 4) == count_params(model.standalone_shapes(arch)), arch
        assert part_sizes(arch, 13, 9, 4).keys() == inherit.parts(arch).keys(), arch


def numpy_gru(params, x):
    """A GRU read left to right over x [L, F], in NumPy: the reference for `Recurrent`'s cell."""
    inputs = x @ np.asarray(params["input"]["kernel"]) + np.asarray(params["input"]["bias"])
    recurrent = np.asarray(params["recurrent"])
    h, states = np.zeros(recurrent.shape[0], np.float32), []
    for xt in inputs:
        xr, xz, xn = np.split(xt, 3)
        hr, hz, hn = np.split(h @ recurrent, 3)
        r, z = 1 / (1 + np.exp(-(xr + hr))), 1 / (1 + np.exp(-(xz + hz)))
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
        states.append(h)
    return np.stack(states)


def test_bidirectional_gru_reads_each_text_both_ways():
    """Each real position holds the forward state after it and the backward state of the reversed text (without
    its padding) at it, each of half the width; `forward_flops` counts both directions."""
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 6, 8)), np.float32)
    lengths = [6, 4]
    mask = jnp.arange(6)[None] < jnp.asarray(lengths)[:, None]
    module = make_op("bigru", 8, None, jax.nn.relu)
    params = module.init(jax.random.key(1), x, mask)["params"]
    out = np.asarray(module.apply({"params": params}, x, mask))
    assert out.shape == (2, 6, 8)
    for row, length in enumerate(lengths):
        text = x[row, :length]
        forward = numpy_gru(params["forward"], text)
        backward = numpy_gru(params["backward"], text[::-1])[::-1]
        np.testing.assert_allclose(out[row, :length], np.concatenate([forward, backward], -1), rtol=1e-5, atol=1e-6)
    space = text_classifier_space(max_blocks=1, ops=("bigru", "gru"), widths=(64,))
    genomes = np.zeros((2, space.num_genes), np.int32)
    genomes[1, space.index("block0_op")] = 1
    bigru, gru = (Architecture.from_genome(space, genome) for genome in genomes)
    head = 2 * 64 * 10
    assert forward_flops(bigru, 32, 10) - head == (forward_flops(gru, 32, 10) - head) // 2


@pytest.mark.slow
def test_padding_does_not_change_a_models_output():
    space = text_classifier_space(max_blocks=2, ops=OPS, widths=(16, 32))
    genomes = np.array(diverse_genomes(space, len(OPS) // 2, jax.random.key(5)))
    genomes[:, space.index("num_blocks")] = 1  # two blocks each: every op in one of them
    genomes[:, space.index("block1_op")] = np.arange(len(OPS) // 2, len(OPS))
    for genome in genomes:
        arch = Architecture.from_genome(space, genome)
        model = TextClassifier(arch, vocab_size=16, max_length=24, num_classes=10)
        tokens = jnp.asarray([[3, 5, 7, 2, 9, 11]], jnp.int32)
        padded = jnp.pad(tokens, ((0, 0), (0, 18)))
        params = model.init(jax.random.key(0), padded, padded != 0)["params"]
        if arch.positional == "learned":  # positions beyond the text are never read
            params = {**params, "position": params["position"].at[6:].set(100.0)}
        short = model.apply({"params": params}, tokens, tokens != 0)
        long = model.apply({"params": params}, padded, padded != 0)
        np.testing.assert_allclose(short, long, rtol=1e-4, atol=1e-5)


def test_dropout_drops_at_its_rate_independently_and_rescales():
    x = jnp.ones((64, 64, 128))
    kept = np.asarray(dropout(x, 0.3, jax.random.key(0)))
    dropped = (kept == 0).ravel()
    assert abs(dropped.mean() - 0.3) < 0.003  # 5 standard deviations
    np.testing.assert_allclose(kept[kept != 0], 1 / (1 - round(0.3 * 65536) / 65536))
    # Elements sharing a word, in neighbouring words, half the array apart, or under another key: independent.
    other_key = (np.asarray(dropout(x, 0.3, jax.random.key(1))) == 0).ravel()
    pairs = [(dropped[:-lag], dropped[lag:]) for lag in (1, 2, 3, dropped.size // 2)] + [(dropped, other_key)]
    for first, second in pairs:
        assert abs((first & second).mean() - 0.09) < 0.003


@pytest.mark.parametrize("x_shape", [(6, 5), (2, 7, 5)])
def test_matmul_has_the_gradients_of_a_plain_matmul(x_shape):
    x, kernel = (jax.random.normal(key, shape) for key, shape in zip(jax.random.split(jax.random.key(0)), [x_shape, (5, 3)]))
    def loss(product):
        return lambda x, kernel: jnp.sum(jnp.sin(product(x, kernel)))
    got = jax.jit(jax.grad(loss(matmul), argnums=(0, 1)))(x, kernel)
    want = jax.grad(loss(lambda a, b: a @ b), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_population_model_rejects_blocks_with_different_choices():
    space = text_classifier_space(max_blocks=2)
    genes = [Gene(g.name, ("attention", "gru")) if g.name == "block1_op" else g for g in space.genes]
    with pytest.raises(ValueError, match="same op choices"):
        PopulationModel(SearchSpace(tuple(genes)), vocab_size=16, max_length=8, num_classes=2)


@pytest.mark.slow
def test_population_init_draws_each_member_like_its_standalone_init(references):
    """Same constants, and every random array (500+ entries) with the standalone init's spread within 15%."""
    for m in references["members"]:
        def check(path, mine, reference, arch=m["arch"]):
            name = f"{arch.width=} {jax.tree_util.keystr(path)}"
            if float(jnp.std(reference)) == 0:
                np.testing.assert_array_equal(mine, reference, err_msg=name)
            elif reference.size >= 500:
                assert abs(np.log(float(jnp.std(mine)) / float(jnp.std(reference)))) < 0.15, name

        jax.tree_util.tree_map_with_path(check, m["init"], m["ref_init"])


def test_state_shapes_are_what_init_returns():
    """`compile` and the memory budget use `state_shapes` instead of tracing init; both must agree."""
    task = listops_task(seed=0, num_train=8, num_validation=4, num_test=4, max_length=16, max_depth=2)
    space = text_classifier_space()
    population = Population(PopulationModel(space, task.vocab_size, task.max_length, task.num_classes))
    genomes = jax.ShapeDtypeStruct((6, space.num_genes), jnp.int32)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 6))
    traced = jax.eval_shape(population.programs["init"], keys, genomes, population.routes(np.zeros(genomes.shape)))
    derived = population.state_shapes(6)
    assert jax.tree.structure(derived) == jax.tree.structure(traced)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(derived)] == [(a.shape, a.dtype) for a in jax.tree.leaves(traced)]
