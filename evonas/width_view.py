"""A member's state cut to what its width uses, for the train steps of one call (the member form).

A member's stored parameters and optimizer moments are held at the largest size the space allows
(`evonas.supernet`): every slot's op buffer is sized for the largest op of any family at the largest
width, and the embedding, norms and head for the largest width. In the mid space (widths 64-128), a conv3
block at width 64 uses 12 k of its slot's 198 k entries; its optimizer would still update, clip and copy
all of them every step, and on CPU that was most of a small member's step.

`WidthView(model, width)` cuts a member's state to its width once per call, and writes it back after:
each width leaf to its leading corner at `width`, and each slot's op buffer to its family's largest op at
`width`, packed (`read` reads any op and variant of the family from it, as a leading corner, the way the
stored layout serves them at the largest width), padded to the largest family's size at `width`. What is
outside the cut keeps its stored values; the steps in between see exactly the numbers the stored layout
holds, so losses and gradients stay those of the standalone model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import Params
from evonas.models import count_params, module_param_shapes
from evonas.ops import IDENTITY, family_name
from evonas.supernet import PopulationModel, leading_slice, take

OP_PATH = ("blocks", "op")  # the stored leaf of the slots' op buffers


class WidthView:
    """Narrowing and widening of one member's stored tree (and optimizer leaves mirroring it) at `width`."""

    def __init__(self, model: PopulationModel, width: int):
        self.model, self.width = model, width
        # A narrowed slot holds its family's largest op and variant at `width`, packed; every other op and
        # variant of the family at `width` reads a leading corner of it, as the stored layout does at the
        # largest width.
        self.family_shapes = {f: module_param_shapes(op, width, variant)
                              for f, (op, variant) in model.largest.items()}
        for f in model.families:
            for op in model.family_ops(f):
                for v in model.variants(f):
                    _check_corner(module_param_shapes(op, width, v), self.family_shapes[f], f"{op} at width {width}")
        self.slot_size = max((count_params(shapes) for shapes in self.family_shapes.values()), default=0)
        paths_and_shapes, self.treedef = jax.tree_util.tree_flatten_with_path(model.stored_shapes)
        self.paths = [tuple(k.key for k in path) for path, _ in paths_and_shapes]
        self.op_leaf = self.paths.index(OP_PATH)
        self.shapes = [self._narrow_shape(path, leaf.shape) for path, (_, leaf) in zip(self.paths, paths_and_shapes)]
        # Stored parameters per member that the steps leave out.
        self.saving = count_params(model.stored_shapes) - sum(int(np.prod(shape)) for shape in self.shapes)

    def _narrow_shape(self, path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
        model, w = self.model, self.width
        if path == OP_PATH:
            return (shape[0], self.slot_size)
        if path[0] == "head":
            return tuple(module_param_shapes("head", w, num_classes=model.num_classes)[path[1]].shape)
        if path[0] == "final_norm":
            return (w,)
        if path[0] in ("embed", "position") or path[:2] == ("blocks", "norm"):  # [rows or slots, width]
            return (shape[0], w)
        raise ValueError(f"no narrowing rule for the stored leaf {'/'.join(path)}")

    def _unpack(self, family: str, buffer: jax.Array) -> Params:
        shapes, treedef = jax.tree.flatten(self.family_shapes[family])
        offsets = np.cumsum([0] + [s.size for s in shapes])
        return jax.tree.unflatten(treedef, [buffer[a:a + s.size].reshape(s.shape) for a, s in zip(offsets, shapes)])

    def read(self, buffer: jax.Array, op: str, width: int, variant) -> Params:
        """The exact-size parameters of `op` at `variant` from a narrowed slot buffer (at this view's width)."""
        return take(self._unpack(family_name(op), buffer), module_param_shapes(op, width, variant))

    # ---- the op buffers, slot by slot ----------------------------------------------------------

    def _per_slot_family(self, genome: jax.Array, fn, identity, *buffers):
        """`fn(family, *slot_buffers)` for each slot's op family, an unbatched switch per slot (slots one after
        another); `identity(*slot_buffers)` for identity slots."""
        model = self.model
        slot_ops = jnp.stack([genome[model.space.index(f"block{i}_op")] for i in range(model.num_slots)])
        branch_of_op = jnp.asarray([len(model.families) if op == IDENTITY else model.families.index(family_name(op))
                                    for op in model.ops])
        branches = [functools.partial(fn, f) for f in model.families] + [identity]

        def one_slot(args):
            op_index, *slot_buffers = args
            return jax.lax.switch(branch_of_op[op_index], branches, *slot_buffers)

        return jax.lax.map(one_slot, (slot_ops, *buffers))

    def _narrow_op(self, family, stored):  # stored [k, B] -> [k, slot_size]
        def one(buffer):
            leaves = jax.tree.leaves(take(self.model.unpack(family, buffer), self.family_shapes[family]))
            flat = jnp.concatenate([leaf.ravel() for leaf in leaves])
            return jnp.pad(flat, (0, self.slot_size - flat.size))

        return jax.vmap(one)(stored)

    def _widen_op(self, family, stored, narrow):  # stored [k, B], narrow [k, slot_size] -> [k, B]
        def one(buffer, compact):
            written = jax.tree.map(_set_corner, self.model.unpack(family, buffer), self._unpack(family, compact))
            flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(written)])
            return buffer.at[:flat.size].set(flat)

        return jax.vmap(one)(stored, narrow)

    # ---- whole members -------------------------------------------------------------------------

    def narrow(self, leaves: list[list[jax.Array]], genome: jax.Array) -> list[list[jax.Array]]:
        """One member's arrays cut to this width: `leaves[i]` lists the arrays shaped like stored leaf i (in
        `stored_shapes`' leaf order): the parameter and the optimizer leaves that mirror it."""
        out = [arrays if i == self.op_leaf else [leading_slice(a, self.shapes[i]) for a in arrays]
               for i, arrays in enumerate(leaves)]
        ops = jnp.stack(leaves[self.op_leaf], axis=1)  # [slots, k, B]
        narrowed = self._per_slot_family(genome, self._narrow_op,
                                     lambda b: jnp.zeros((b.shape[0], self.slot_size), b.dtype), ops)
        out[self.op_leaf] = list(jnp.moveaxis(narrowed, 1, 0))
        return out

    def widen(self, stored: list[list[jax.Array]], narrow: list[list[jax.Array]], genome: jax.Array):
        """`narrow`'s values written back into the stored leaves (the inverse of `narrow` on what a member uses)."""
        out = [fulls if i == self.op_leaf else [_set_corner(full, part) for full, part in zip(fulls, parts)]
               for i, (fulls, parts) in enumerate(zip(stored, narrow))]
        ops = jnp.stack(stored[self.op_leaf], axis=1)
        compact = jnp.stack(narrow[self.op_leaf], axis=1)
        widened = self._per_slot_family(genome, self._widen_op, lambda b, c: b, ops, compact)
        out[self.op_leaf] = list(jnp.moveaxis(widened, 1, 0))
        return out

    def _groups(self, params: Params, opt_state: tuple, mirrors: list[int | None]) -> list[list[jax.Array]]:
        groups = [[leaf] for leaf in jax.tree.leaves(params)]
        for position, mirror in enumerate(mirrors):
            if mirror is not None:
                groups[mirror].append(opt_state[position])
        return groups

    def _ungroup(self, groups: list[list[jax.Array]], opt_state: tuple, mirrors: list[int | None]):
        params = jax.tree.unflatten(self.treedef, [group[0] for group in groups])
        rest = [iter(group[1:]) for group in groups]
        opt_state = tuple(leaf if mirror is None else next(rest[mirror]) for leaf, mirror in zip(opt_state, mirrors))
        return params, opt_state

    def narrow_state(self, params: Params, opt_state: tuple, mirrors: list[int | None], genome: jax.Array):
        """A member's stored parameters and optimizer storage (whose leaf at position p mirrors parameter leaf
        `mirrors[p]`, or none) cut to this width."""
        return self._ungroup(self.narrow(self._groups(params, opt_state, mirrors), genome), opt_state, mirrors)

    def widen_state(self, params: Params, opt_state: tuple, narrow_params: Params, narrow_opt_state: tuple,
                    mirrors: list[int | None], genome: jax.Array):
        """`narrow_state`'s inverse: the narrowed values written back into the stored ones."""
        stored = self._groups(params, opt_state, mirrors)
        widened = self.widen(stored, self._groups(narrow_params, narrow_opt_state, mirrors), genome)
        return self._ungroup(widened, narrow_opt_state, mirrors)  # leaves mirroring none (counts): the narrowed


def _set_corner(full: jax.Array, part: jax.Array) -> jax.Array:
    """`full` with its leading corner of `part`'s shape replaced by `part` (`leading_slice`'s write)."""
    return full.at[tuple(slice(0, d) for d in part.shape)].set(part)


def _check_corner(shapes: Params, largest: Params, what: str) -> None:
    """Every leaf of `shapes` fits in the leading corner of `largest`'s leaf (the narrowed layout's premise)."""
    def fits(path, small, big):
        if len(small.shape) != len(big.shape) or any(a > b for a, b in zip(small.shape, big.shape)):
            raise ValueError(f"{what}: {jax.tree_util.keystr(path)} {small.shape} is no corner of {big.shape}")

    jax.tree_util.tree_map_with_path(fits, shapes, largest)
