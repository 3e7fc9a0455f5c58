"""Weight inheritance: which parts a child keeps from its parent, and that a child started from them is still
exactly its standalone model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evonas import inherit
from evonas.data import listops_task
from evonas.member import TrainConfig, loss_fn
from evonas.models import Architecture, TextClassifier
from evonas.population import Population
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel

SPACE = text_classifier_space(max_blocks=2, ops=("identity", "attention", "conv3"), activations=("relu", "gelu"),
                              norms=("layernorm", "rmsnorm", "none"), widths=(16, 32), heads=(1, 2), ffn_expansions=(1,),
                              dropouts=(0.0,), positionals=("learned", "none"), poolings=("mean",),
                              learning_rates=(1e-3, 1e-2), weight_decays=(0.0,), optimizers=("adamw", "lion"),
                              final_norms=("layernorm", "rmsnorm", "none"))
PARENT = {"num_blocks": 2, "block0_op": "attention", "block0_activation": "relu", "block0_norm": "layernorm",
          "block1_op": "conv3", "block1_activation": "relu", "block1_norm": "rmsnorm", "width": 16, "heads": 2,
          "ffn_expansion": 1, "dropout": 0.0, "positional": "learned", "pooling": "mean", "learning_rate": 1e-3,
          "weight_decay": 0.0, "optimizer": "adamw", "final_norm": "layernorm"}
ALL = {("embed",), ("position",), ("final_norm",), ("head",), ("block", 0, "op"), ("block", 0, "norm"),
       ("block", 1, "op"), ("block", 1, "norm")}
# A child's changed genes -> the parts it inherits from PARENT.
CHILDREN = [
    ({"block1_activation": "gelu", "learning_rate": 1e-2, "optimizer": "lion"}, ALL),  # no parameters change
    ({"width": 32}, set()),  # every part is sized by the width
    ({"block0_op": "conv3"}, ALL - {("block", 0, "op")}),  # a new op; its norm normalizes the same input
    ({"heads": 1}, ALL - {("block", 0, "op")}),  # attention's shapes change, the conv's do not
    ({"block1_norm": "layernorm"}, ALL - {("block", 1, "norm")}),
    ({"block1_norm": "none"}, ALL - {("block", 1, "norm")}),
    ({"block1_op": "identity"}, ALL - {("block", 1, "op"), ("block", 1, "norm")}),  # identity holds nothing
    ({"num_blocks": 1}, ALL - {("block", 1, "op"), ("block", 1, "norm")}),
    ({"positional": "none"}, ALL - {("position",)}),
    ({"final_norm": "rmsnorm"}, ALL - {("final_norm",)}),  # LayerNorm's scale is not RMSNorm's
    ({"final_norm": "none"}, ALL - {("final_norm",)}),
]


def arch(changes=None):
    return Architecture.from_genome(SPACE, SPACE.encode({**PARENT, **(changes or {})}))


@pytest.mark.parametrize("changes,expected", CHILDREN)
def test_a_child_inherits_the_parts_that_keep_their_op_and_shape(changes, expected):
    assert inherit.matching_parts(arch(changes), arch()) == frozenset(expected)


def test_a_grown_block_starts_afresh_and_the_mask_marks_only_matching_rows():
    parent, child = arch({"num_blocks": 1}), arch()
    matched = inherit.matching_parts(child, parent)
    assert matched == ALL - {("block", 1, "op"), ("block", 1, "norm")}
    model = PopulationModel(SPACE, vocab_size=20, max_length=8, num_classes=3)
    mask = inherit.stored_mask(model.stored_shapes, child, matched, model.num_slots)
    assert bool(mask["embed"]["embedding"]) and bool(mask["head"]["kernel"]) and bool(mask["position"])
    np.testing.assert_array_equal(mask["blocks"]["op"], [True, False])
    np.testing.assert_array_equal(mask["blocks"]["norm"]["layernorm"]["scale"], [True, False])  # block0's own norm
    np.testing.assert_array_equal(mask["blocks"]["norm"]["rmsnorm"]["scale"], [False, False])
    share = inherit.inherited_share(model.standalone_shapes(child), matched)
    fresh = sum(leaf.size for leaf in jax.tree.leaves(model.standalone_shapes(child)["block1"]))
    total = sum(leaf.size for leaf in jax.tree.leaves(model.standalone_shapes(child)))
    assert share == pytest.approx(1 - fresh / total)
    assert inherit.inherited_share(model.standalone_shapes(child), frozenset()) == 0.0


def test_the_store_keeps_exactly_the_living_members():
    model = PopulationModel(SPACE, vocab_size=20, max_length=8, num_classes=3)
    store = inherit.empty_store(model.stored_shapes, population_size=3, num_genes=SPACE.num_genes)
    def params(ids):
        tree = jax.tree.map(lambda s: np.zeros((len(ids), *s.shape), s.dtype), model.stored_shapes)
        tree["embed"]["embedding"][:] = np.asarray(ids, np.float32)[:, None, None]
        return tree

    genomes = np.stack([SPACE.encode(PARENT)] * 2)
    store = inherit.keep_alive(store, np.array([0, 1, -1]), np.array([0, 1]), genomes, params([0, 1]))
    store = inherit.keep_alive(store, np.array([2, 1, 3]), np.array([2, 3]), genomes, params([2, 3]))
    np.testing.assert_array_equal(store["ids"], [2, 1, 3])
    np.testing.assert_array_equal(store["params"]["embed"]["embedding"][:, 0, 0], [2, 1, 3])
    assert 0 not in store["ids"]  # member 0 died: no row of the store holds it


FORMS = {"member": TrainConfig(form="member"),
         "grouped": TrainConfig(form="grouped", tile_sizes=(("attention", 2), ("conv", 2)))}


@pytest.mark.slow
@pytest.mark.parametrize("form", list(FORMS))
def test_a_child_started_from_inherited_parameters_is_its_standalone_model(form):
    """Children started from their parents' parameters: each standalone parameter is the parent's where its part
    matches and the child's fresh draw elsewhere, and the population's losses and gradients are those of the
    standalone model started from those parameters."""
    task = listops_task(seed=0, num_train=32, num_validation=8, num_test=8, max_length=12, max_depth=2)
    model = PopulationModel(SPACE, task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, FORMS[form])
    children = np.stack([SPACE.encode({**PARENT, **changes}) for changes, _ in CHILDREN[:4]])  # all, none, some
    parents = np.stack([SPACE.encode(PARENT)] * 4)
    store = inherit.empty_store(model.stored_shapes, 4, SPACE.num_genes)
    *nothing, _ = inherit.plan(model, SPACE, store, children, -np.ones((4, 2), int))  # no parents: all fresh
    nothing = population.distribute(nothing)
    trained = population.init(jax.random.split(jax.random.key(7), 4), parents, start_from=nothing)  # any values
    store = inherit.keep_alive(store, np.arange(4), np.arange(4), parents, jax.tree.map(np.asarray, trained.params))
    *start_from, shares = inherit.plan(model, SPACE, store, children, np.stack([np.arange(4), -np.ones(4, int)], 1))
    keys = jax.random.split(jax.random.key(1), 4)
    states = population.init(keys, children, start_from=population.distribute(start_from))
    fresh = population.init(keys, children, start_from=nothing)
    tokens, labels = jnp.asarray(task.train.tokens[:6]), jnp.asarray(task.train.labels[:6])
    losses, grads = population.loss_and_grads(states.params, children, tokens, labels, jax.random.key(2))
    kinds = set()
    for i, genome in enumerate(children):
        child, parent = (Architecture.from_genome(SPACE, g) for g in (genome, parents[i]))
        matched = inherit.matching_parts(child, parent)
        assert shares[i] == pytest.approx(inherit.inherited_share(model.standalone_shapes(child), matched))
        mine, own, theirs = (model.extract(a, jax.tree.map(lambda x, i=i: x[i], tree)) for a, tree in
                             ((child, states.params), (child, fresh.params), (parent, trained.params)))

        def check(path, value, fresh_value, i=i, matched=matched, theirs=theirs):
            keys = tuple(k.key for k in path)
            part = inherit.standalone_part(keys)
            expected = _at(theirs, keys) if part in matched else fresh_value
            kinds.add(part in matched)
            np.testing.assert_array_equal(value, expected, err_msg=f"child {i} {keys}")

        jax.tree_util.tree_map_with_path(check, mine, own)
        module = TextClassifier(child, task.vocab_size, task.max_length, task.num_classes)

        def standalone_loss(p, module=module):
            return loss_fn(module.apply({"params": p}, tokens, tokens != 0, jax.random.key(2)), labels)

        ref_loss, ref_grads = jax.jit(jax.value_and_grad(standalone_loss))(mine)
        np.testing.assert_allclose(losses[i], ref_loss, rtol=1e-5)
        used = model.extract(child, jax.tree.map(lambda g, i=i: g[i], grads))
        for a, b in zip(jax.tree.leaves(used), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert kinds == {True, False}  # both inherited and fresh parameters were compared
    assert shares.max() == 1.0 and shares.min() == 0.0 and ((0 < shares) & (shares < 1)).any()
    assert population.traces == 2  # init_from and loss_and_grads, each once for every genome and mask


def _at(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree
