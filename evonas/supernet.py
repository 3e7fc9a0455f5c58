"""The population form's stored layout, and its per-member forward pass.

`PopulationModel` stores a member's parameters at the largest size the space allows: one slot per
possible block, each holding one flat buffer from which its op family (`evonas.ops.OP_FAMILIES`) reads
the exact-size parameters of any of its ops and variants as leading corners (a member's genome never
changes, so its slot only ever holds the family it uses). The same layout serves both population forms:
`apply` here, which runs one member with its genes as traced integers, each gene picking a branch of an
unbatched `lax.switch` (only the chosen architecture is computed: the form for CPUs, one member after
another), and `evonas.grouped`, which runs members side by side grouped by op (for GPUs and TPUs).
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import ACTIVATION_FNS, Dense, Params, dropout, pool, sinusoidal_positions
from evonas.models import HEAD_DROPOUT_KEY, Architecture, TextClassifier, count_params, make_norm, module_param_shapes
from evonas.ops import IDENTITY, OP_FAMILIES, family_name, make_op
from evonas.space import SearchSpace


class PopulationModel:
    """Every architecture of a space behind one set of traced genes, in one stored layout."""

    def __init__(self, space: SearchSpace, vocab_size: int, max_length: int, num_classes: int):
        self.space, self.vocab_size, self.max_length, self.num_classes = space, vocab_size, max_length, num_classes
        self.num_slots = sum(name.endswith("_op") for name in space.names)
        self.choices = {gene.name: gene.choices for gene in space.genes}
        for part in ("op", "activation", "norm"):  # one switch table serves every slot
            if len({self.choices[f"block{i}_{part}"] for i in range(self.num_slots)}) > 1:
                raise ValueError(f"every block must offer the same {part} choices; block{{i}}_{part} genes differ")
        self.ops = self.choices["block0_op"]
        self.families = [name for name, family in OP_FAMILIES.items() if set(family.ops) & set(self.ops)]
        for op in self.ops:
            if op != IDENTITY:
                family_name(op)  # an op no family holds is an error
        self.norms = sorted(set(self.choices["block0_norm"]) - {"none"})
        self.final_norms = self.choices.get("final_norm", ("layernorm",))  # a space without the gene: LayerNorm
        self.max_width = max(self.choices["width"])
        self.largest = {f: self._largest(f) for f in self.families}  # what a slot's buffer holds, per family
        self.op_buffer_size = max((count_params(self._stored_op_shapes(f)) for f in self.families), default=0)
        self.stored_shapes = jax.eval_shape(self.init, jax.random.key(0), jnp.zeros(space.num_genes, jnp.int32))

    def family_ops(self, family: str) -> tuple[str, ...]:
        """The family's ops that the space offers, in registry order."""
        return tuple(op for op in OP_FAMILIES[family].ops if op in self.ops)

    def variants(self, family: str) -> tuple[Any, ...]:
        """The choices of the family's variant gene, or (None,)."""
        gene = OP_FAMILIES[family].variant_gene
        return (None,) if gene is None else tuple(self.choices[gene])

    def _largest(self, family: str) -> tuple[str, Any]:
        """The family's op and variant with the most parameters; every other is a leading corner of it."""
        return max(((op, v) for op in self.family_ops(family) for v in self.variants(family)),
                   key=lambda ov: count_params(module_param_shapes(ov[0], self.max_width, ov[1])))

    def _stored_op_shapes(self, family: str) -> Params:
        return module_param_shapes(self.largest[family][0], self.max_width, self.largest[family][1])

    def _index(self, genome, name):
        return genome[self.space.index(name)]

    def final_norm_index(self, genome) -> jax.Array:
        """The genome's choice of final norm, an index into `final_norms`."""
        return self._index(genome, "final_norm") if "final_norm" in self.choices else jnp.int32(0)

    def value(self, genome, name):
        """The traced value a genome chooses for gene `name`."""
        return jnp.asarray(self.choices[name])[self._index(genome, name)]

    def pack(self, params: Params) -> jax.Array:
        """A family's largest-size parameters as one slot buffer [op_buffer_size]."""
        flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(params)])
        return jnp.pad(flat, (0, self.op_buffer_size - flat.size))

    def unpack(self, family: str, buffer: jax.Array) -> Params:
        """The family's largest-size parameters read from a slot buffer (`pack`'s inverse)."""
        shapes, treedef = jax.tree.flatten(self._stored_op_shapes(family))
        offsets = np.cumsum([0] + [s.size for s in shapes])
        leaves = [buffer[start:start + s.size].reshape(s.shape) for start, s in zip(offsets, shapes)]
        return jax.tree.unflatten(treedef, leaves)

    def read(self, buffer: jax.Array, op: str, width: int, variant) -> Params:
        """The exact-size parameters of `op` at `width` and `variant` in a slot buffer."""
        return take(self.unpack(family_name(op), buffer), module_param_shapes(op, width, variant))

    # ---- initialisation -------------------------------------------------------------

    def init(self, key: jax.Array, genome: jax.Array) -> Params:
        """Stored parameters whose used corner is distributed as the standalone model's init.

        Every array is drawn once at its stored size by the standalone model's own Flax initializers,
        and each fan-in-scaled one (kernels, embeddings) is rescaled to the fan-in of the genome's exact
        shape. Entries are i.i.d., so the corner a genome uses is an exact-size draw, and the program
        needs no switch over widths and variants, which made it slow to compile.
        """
        wmax, width_index = self.max_width, self._index(genome, "width")
        key_embed, key_position, key_blocks, key_head = jax.random.split(key, 4)
        # lazy_init: shapes in, parameters out, without running the modules' forward pass.
        x, tokens = jax.ShapeDtypeStruct((1, 4, wmax), jnp.float32), jax.ShapeDtypeStruct((1, 4), jnp.int32)
        stored = {
            "embed": nn.Embed(self.vocab_size, wmax).lazy_init(key_embed, tokens)["params"],
            "final_norm": nn.LayerNorm().lazy_init(key, x)["params"],
            "head": Dense(self.num_classes).lazy_init(key_head, x)["params"],
        }
        exact = [{"embed": {"embedding": jax.ShapeDtypeStruct((self.vocab_size, w), jnp.float32)},
                  "final_norm": module_param_shapes("layernorm", w),
                  "head": module_param_shapes("head", w, num_classes=self.num_classes)} for w in self.choices["width"]]
        stored = _rescaled_to_exact_fan_in(stored, exact, width_index)
        if "learned" in self.choices["positional"]:
            stored["position"] = nn.initializers.normal(0.02)(key_position, (self.max_length, wmax))
        slot_ops = jnp.stack([self._index(genome, f"block{i}_op") for i in range(self.num_slots)])
        init_slot = functools.partial(self._init_slot, genome, width_index)
        stored["blocks"] = jax.vmap(init_slot)(jax.random.split(key_blocks, self.num_slots), slot_ops)
        return stored

    def _init_slot(self, genome, width_index, key, op_index):
        x, wmax = jax.ShapeDtypeStruct((1, 4, self.max_width), jnp.float32), self.max_width
        mask = jax.ShapeDtypeStruct((1, 4), jnp.bool_)
        norms = {"layernorm": nn.LayerNorm().lazy_init(key, x)["params"],
                 "rmsnorm": nn.RMSNorm().lazy_init(key, x)["params"]}
        buffers = []
        for family, family_key in zip(self.families, jax.random.split(key, len(self.families))):
            op, variant = self.largest[family]
            params = make_op(op, wmax, variant, ACTIVATION_FNS["relu"]).lazy_init(family_key, x, mask)["params"]
            ops, variants = self.family_ops(family), self.variants(family)
            exact = [module_param_shapes(o, w, v) for w in self.choices["width"] for o in ops for v in variants]
            op_in_family = jnp.asarray([ops.index(o) if o in ops else 0 for o in self.ops])[op_index]
            gene = OP_FAMILIES[family].variant_gene
            variant_index = 0 if gene is None else self._index(genome, gene)
            option = (width_index * len(ops) + op_in_family) * len(variants) + variant_index
            buffers.append(self.pack(_rescaled_to_exact_fan_in(params, exact, option)))
        family_index = [self.families.index(family_name(op)) if op != IDENTITY else 0 for op in self.ops]
        buffers = jnp.stack(buffers) if buffers else jnp.zeros((1, 0))  # a space of identity blocks only
        return {"norm": {n: norms[n] for n in self.norms}, "op": buffers[jnp.asarray(family_index)[op_index]]}

    # ---- the per-member forward pass ------------------------------------------------

    def apply(self, stored: Params, genome: jax.Array, tokens, mask, dropout_key=None) -> jax.Array:
        """Logits [B, C] of the member with this genome, equal to its standalone model's."""
        return self.at_width(genome, functools.partial(self.apply_at_width, stored=stored, genome=genome,
                                                       tokens=tokens, mask=mask, dropout_key=dropout_key))

    def at_width(self, genome: jax.Array, fn: Callable[[int], Any]):
        """`fn(width)` at the genome's width, the one switch over widths. Differentiate inside `fn`: a
        switch differentiated from outside keeps every width's residuals, zero-filled, for its backward."""
        branches = [functools.partial(fn, width) for width in self.choices["width"]]
        return jax.lax.switch(self._index(genome, "width"), branches)

    def apply_at_width(self, width: int, stored, genome, tokens, mask, dropout_key=None, read=None) -> jax.Array:
        """`apply` for a genome whose width is `width`; `read(buffer, op, width, variant)` reads an op's parameters
        from its slot buffer (default `self.read`; `evonas.width_view` passes its narrowed layout's)."""
        read = self.read if read is None else read
        length = tokens.shape[1]
        x = jnp.take(stored["embed"]["embedding"][:, :width], tokens, axis=0)
        position_tables = {
            "learned": lambda: stored["position"][:length, :width],
            "sinusoidal": lambda: sinusoidal_positions(length, width),
            "none": lambda: jnp.zeros((length, width), jnp.float32),
        }
        positions = [lambda p=p: position_tables[p]().astype(x.dtype) for p in self.choices["positional"]]
        x = x + jax.lax.switch(self._index(genome, "positional"), positions)[None]
        x = x * mask[..., None]
        num_blocks = self.value(genome, "num_blocks")
        per_slot = {part: jnp.stack([self._index(genome, f"block{i}_{part}") for i in range(self.num_slots)])
                    for part in ("op", "activation", "norm")}

        def run_slot(x, slot):
            slot_params, op, activation, norm, index = slot
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
            skip = len(self.ops)  # the op switch's last branch: slots past the last block
            op_or_skip = jnp.where(index < num_blocks, op, skip)
            return self._block(width, genome, slot_params, op_or_skip, activation, norm, key, x, mask, read), None

        slots = (stored["blocks"], per_slot["op"], per_slot["activation"], per_slot["norm"], jnp.arange(self.num_slots))
        x, _ = jax.lax.scan(run_slot, x, slots)
        finals = [functools.partial(apply_norm, n, width, stored["final_norm"]) for n in self.final_norms]
        x = finals[0](x) if len(finals) == 1 else checkpointed_switch(self.final_norm_index(genome), finals, x)
        poolings = [functools.partial(pool, pooling=p) for p in self.choices["pooling"]]
        pooled = checkpointed_switch(self._index(genome, "pooling"), poolings, x, mask)
        if "head_dropout" in self.choices and dropout_key is not None:
            pooled = dropout(pooled, self.value(genome, "head_dropout"), jax.random.fold_in(dropout_key, HEAD_DROPOUT_KEY))
        head = take(stored["head"], module_param_shapes("head", width, num_classes=self.num_classes))
        return Dense(self.num_classes).apply({"params": head}, pooled)

    def _block(self, width, genome, slot_params, op_or_skip, activation, norm, key, x, mask, read):
        activations = [ACTIVATION_FNS[a] for a in self.choices["block0_activation"]]

        def activation_fn(z):
            return checkpointed_switch(activation, activations, z)

        def norm_of_kind(name, h, params):
            return apply_norm(name, width, params.get(name), h)

        # Computed once outside the op switch: 3 norm branches instead of 3 per op.
        norms = [functools.partial(norm_of_kind, n) for n in self.choices["block0_norm"]]
        normalized = checkpointed_switch(norm, norms, x, slot_params["norm"])

        def run_op(op_name):
            if op_name == IDENTITY:
                return x

            def op_output(variant, buffer, h):
                module = make_op(op_name, width, variant, activation_fn)
                return module.apply({"params": read(buffer, op_name, width, variant)}, h, mask)

            # The dropout mask is drawn outside the recomputed op: drawing it costs about as much as a small op.
            family = family_name(op_name)
            gene = OP_FAMILIES[family].variant_gene
            variant_index = jnp.int32(0) if gene is None else self._index(genome, gene)
            h = checkpointed_switch(variant_index, [functools.partial(op_output, v) for v in self.variants(family)],
                                    slot_params["op"], normalized)
            return (x + dropout(h, self.value(genome, "dropout"), key)) * mask[..., None]

        # One switch, not a block cond around an op switch: each level of control flow copies its outputs.
        ops = [functools.partial(run_op, o) for o in self.ops]
        return jax.lax.switch(op_or_skip, [*ops, lambda: x])

    # ---- exact-size view ------------------------------------------------------------

    def standalone(self, arch: Architecture) -> TextClassifier:
        return TextClassifier(arch, self.vocab_size, self.max_length, self.num_classes)

    def standalone_shapes(self, arch: Architecture) -> Params:
        tokens = jax.ShapeDtypeStruct((1, self.max_length), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, self.max_length), jnp.bool_)
        return jax.eval_shape(self.standalone(arch).init, jax.random.key(0), tokens, mask)["params"]

    def _stored_tree(self, arch: Architecture, stored: Params, path: tuple[str, ...]) -> tuple[Params, tuple[str, ...]]:
        """The stored (sub)tree holding a standalone parameter, and the parameter's path inside it."""
        if not path[0].startswith("block"):
            return stored, path
        slot = int(path[0][len("block"):])
        block = arch.blocks[slot]
        if path[1] == "norm":
            return jax.tree.map(lambda a: a[slot], stored["blocks"]["norm"][block.norm]), path[2:]
        return self.unpack(family_name(block.op), stored["blocks"]["op"][slot]), path[2:]

    def extract(self, arch: Architecture, stored: Params) -> Params:
        """The exact-size standalone parameters (or gradients) held in a member's stored tree."""
        shapes = self.standalone_shapes(arch)

        def cut(path, shape):
            tree, inner_path = self._stored_tree(arch, stored, tuple(k.key for k in path))
            leaf = functools.reduce(lambda subtree, name: subtree[name], inner_path, tree)
            return leading_slice(leaf, shape.shape)

        return jax.tree_util.tree_map_with_path(cut, shapes)


def apply_norm(name: str, width: int, stored: Params | None, h: jax.Array) -> jax.Array:
    """h through the norm `name` at `width`, its parameters read from the leading corner of `stored`: one
    norm's stored arrays, or the final norm's, which LayerNorm and RMSNorm share (a member uses one kind)."""
    module = make_norm(name)
    if module is None:
        return h
    shapes = module_param_shapes(name, width)
    return module.apply({"params": {k: leading_slice(stored[k], v.shape) for k, v in shapes.items()}}, h)


def checkpointed_switch(index: jax.Array, branches: list[Callable], *operands):
    """`lax.switch` whose branches are recomputed in the backward pass. Differentiated from outside, a switch
    keeps every branch's intermediates for its backward, zero-filled where another branch ran; checkpointed,
    it keeps only the operands, which its branches share."""
    return jax.lax.switch(index, [jax.checkpoint(branch) for branch in branches], *operands)


def leading_slice(stored: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return stored[tuple(slice(0, d) for d in shape)]


def take(stored: Params, shapes: Params) -> Params:
    """The leading corner of every stored array, cut to the exact shapes of `shapes`."""
    return jax.tree.map(lambda a, s: leading_slice(a, s.shape), stored, shapes)


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    """Flax's fan-in of a variance-scaled initializer: embeddings spread their last axis, kernels all but it."""
    return shape[-1] if name == "embedding" else int(np.prod(shape[:-1]))


def _rescaled_to_exact_fan_in(stored: Params, exact_options: list[Params], option: jax.Array) -> Params:
    """Rescales each fan-in-initialized array, drawn at its stored size, to the fan-in of its exact shape
    under the traced `option` (an index into `exact_options`)."""

    def rescale(path, value, *exact):
        name = path[-1].key
        if name not in ("kernel", "recurrent", "embedding"):  # biases, norm scales: constants
            return value
        factors = [np.sqrt(_fan_in(name, value.shape) / _fan_in(name, e.shape)) for e in exact]
        return value * jnp.asarray(factors, value.dtype)[option]

    return jax.tree_util.tree_map_with_path(rescale, stored, *exact_options)
