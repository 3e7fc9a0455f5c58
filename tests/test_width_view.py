"""The member form's width view: a member's state cut to its width holds the parameters its standalone model
has, as the stored layout holds them, and writing it back changes nothing outside what it cut."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import diverse_genomes

from evonas.models import Architecture
from evonas.ops import IDENTITY, OPS, family_name
from evonas.optimizers import SharedOptimizerState, make_optimizer
from evonas.space import text_classifier_space
from evonas.supernet import PopulationModel
from evonas.width_view import WidthView


@pytest.fixture(scope="module")
def model():
    space = text_classifier_space(max_blocks=3, ops=OPS, widths=(8, 12, 16), heads=(1, 2), ffn_expansions=(1, 2))
    return PopulationModel(space, vocab_size=11, max_length=6, num_classes=3)


def test_width_view_holds_the_standalone_parameters_and_writes_back_only_what_it_cut(model):
    space = model.space
    views = {w: WidthView(model, w) for w in space.gene("width").choices}
    for i, genome in enumerate(diverse_genomes(space, 2 * len(OPS), jax.random.key(3))):
        arch = Architecture.from_genome(space, np.asarray(genome))
        view = views[arch.width]
        stored = model.init(jax.random.key(i), genome)
        moments = jax.tree.map(lambda a: 2 * a + 1, stored)  # an optimizer leaf that mirrors each parameter
        narrow = jax.jit(view.narrow)([[p, m] for p, m in zip(jax.tree.leaves(stored), jax.tree.leaves(moments))],
                                      genome)
        narrow_params = jax.tree.unflatten(view.treedef, [group[0] for group in narrow])
        # What the narrowed steps read: the standalone model's parameters, as the stored layout reads them.
        for slot, block in enumerate(arch.blocks):
            if block.op == IDENTITY:
                continue
            variant = arch.variant(block.op)
            jax.tree.map(np.testing.assert_array_equal,
                         view.read(narrow_params["blocks"]["op"][slot], block.op, arch.width, variant),
                         model.read(stored["blocks"]["op"][slot], block.op, arch.width, variant))
        assert narrow_params["embed"]["embedding"].shape[1] == arch.width
        # Written back after every narrowed value changed by one: every standalone parameter moved by one, and
        # nothing outside the width's corners (in a slot: its op family's largest op at the width) moved.
        moved = [[a + 1 for a in group] for group in narrow]
        widened = jax.jit(view.widen)([[p, m] for p, m in zip(jax.tree.leaves(stored), jax.tree.leaves(moments))],
                                      moved, genome)
        change = jax.tree.unflatten(view.treedef, [group[0] for group in widened])
        change = jax.tree.map(lambda new, old: np.asarray(new) - np.asarray(old), change, stored)
        written = jax.tree.map(lambda d: np.isclose(d, 1.0), change)
        assert all(np.all(np.isclose(d, 0.0) | w) for d, w in zip(jax.tree.leaves(change), jax.tree.leaves(written)))
        used = model.extract(arch, jax.tree.map(jnp.asarray, written))
        assert all(np.all(leaf) for leaf in jax.tree.leaves(used)), f"{arch}: a parameter was not written back"
        jax.tree.map(lambda w, e, arch=arch: np.testing.assert_array_equal(w, e, err_msg=str(arch)),
                     written, corners(model, view, np.asarray(genome)))
        moments_back = jax.tree.unflatten(view.treedef, [group[1] for group in widened])
        jax.tree.map(lambda new, old, w: np.testing.assert_allclose(np.asarray(new) - np.asarray(old), w, atol=1e-5),
                     moments_back, moments, written)


def test_optimizer_storage_knows_which_parameter_each_leaf_mirrors(model):
    optimizers = [make_optimizer(name, 1e-3, 0.0, 1.0) for name in ("adamw", "lion", "sgd")]
    storage = SharedOptimizerState(optimizers, model.stored_shapes)
    shapes = [leaf.shape for leaf in jax.tree.leaves(model.stored_shapes)]
    for position, mirror in enumerate(storage.mirrors):
        if mirror is None:
            assert storage.kinds[position][0] == ()  # a step count
        else:
            assert storage.kinds[position][0] == shapes[mirror]
    assert sum(m is not None for m in storage.mirrors) == 2 * len(shapes)  # Adam's two moments; Lion, SGD share one


def corners(model, view, genome):
    """Per stored element, whether it lies in what the view cuts: each width leaf's leading corner at the width,
    and in each slot's op buffer the corners of its family's largest op at the width (none for identity)."""
    def corner(shape, narrow_shape):
        mask = np.zeros(shape, bool)
        mask[tuple(slice(0, d) for d in narrow_shape)] = True
        return mask

    leaves = [corner(leaf.shape, shape) for leaf, shape in zip(jax.tree.leaves(model.stored_shapes), view.shapes)]
    slots = []
    for i in range(model.num_slots):
        op = model.ops[genome[model.space.index(f"block{i}_op")]]
        if op == IDENTITY:
            slots.append(np.zeros(model.op_buffer_size, bool))
            continue
        family = family_name(op)
        largest = model.unpack(family, jnp.zeros(model.op_buffer_size))
        masks = jax.tree.map(lambda big, small: jnp.asarray(corner(big.shape, small.shape), jnp.float32),
                             largest, view.family_shapes[family])
        slots.append(np.asarray(model.pack(masks)) > 0)
    leaves[view.op_leaf] = np.stack(slots)
    return jax.tree.unflatten(view.treedef, leaves)
