"""The grouped population form: members side by side, grouped at each block slot by the op they run.

This is the form for GPUs and TPUs, where members must run side by side to fill the device. Vectorising
the per-member form (`evonas.supernet`) would turn every `lax.switch` into a select over all its
branches, nested, so every member would compute every op at every width. Here, as a mixture-of-experts
layer routes tokens, each block slot routes members: the host orders the members of each op family into
fixed-size tiles by what they run (`schedule`), and one compiled program maps over the tiles, each running
its family's population form (`OP_FAMILIES[f].rows`) on its members side by side, under an unbatched
switch over widths. Cheap choices are arithmetic over one layout rather than branches: activations,
norms, dropout rates, positions and pooling are selects; attention's head count is a mixing of subheads;
a convolution's kernel size and a gated MLP's expansion are zero-padded weights; recurrent cells of any
width and either kind run at the largest width in one time scan. Every member still computes exactly
what its standalone model does (tests hold both forms to it).

The residual stream is held at the largest width, zero beyond each member's own: x [P, B, L, W].
Shapes depend on the space and the tile sizes only, so one program serves every generation.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import Params, dropout, padded_norm, pool, select_activation, sinusoidal_positions
from evonas.models import HEAD_DROPOUT_KEY
from evonas.ops import IDENTITY, OP_FAMILIES, Rows
from evonas.supernet import PopulationModel


@dataclasses.dataclass(frozen=True)
class Variant:
    """What the members of one tile may differ in: one branch of a family's population form."""

    widths: tuple[int, ...]
    ops: tuple[str, ...]
    choices: tuple  # of the family's variant gene (heads, expansion), or (None,)


@dataclasses.dataclass(frozen=True)
class Group:
    """One op family's tiles at a block slot: `num_tiles` tiles of `tile_size` members, each tile running
    one of `variants`."""

    family: str
    variants: tuple[Variant, ...]
    tile_size: int
    num_tiles: int


def default_tile_sizes(model: PopulationModel, num_members: int) -> dict[str, int]:
    """Members per tile for each family, from how many members of a uniform population run its ops at each
    width at a slot: about half of that, so that tiles are full while padding stays a small share."""
    ops = [op for op in model.ops if op != IDENTITY]
    sizes = {}
    for family in model.families:
        share = len(model.family_ops(family)) / max(len(ops), 1)
        widths = 1 if OP_FAMILIES[family].any_width else len(model.choices["width"])
        expected = num_members * share / widths
        sizes[family] = int(2 ** np.floor(np.log2(max(expected / 2, 1))))
    return sizes


def family_variants(model: PopulationModel, family: str, merged: bool) -> tuple[Variant, ...]:
    """A family's tile branches. Merged, a tile holds any op and choice of the family at one width (at any
    width where the family computes every width at the largest); else one exact op, choice and width, which
    is what tiles of one member want (nothing to share, nothing to pad)."""
    widths, ops, choices = tuple(model.choices["width"]), model.family_ops(family), model.variants(family)
    if not merged:
        return tuple(Variant((w,), (op,), (c,)) for w in widths for op in ops for c in choices)
    if OP_FAMILIES[family].any_width:
        return (Variant(widths, ops, choices),)
    return tuple(Variant((w,), ops, choices) for w in widths)


class GroupedModel:
    """Forward pass of a chunk of members in the grouped form; `schedule` routes them on the host."""

    def __init__(self, model: PopulationModel, num_members: int, tile_sizes: dict[str, int] | None = None):
        self.model, self.num_members = model, num_members
        self.widths = tuple(model.choices["width"])
        tile_sizes = {**default_tile_sizes(model, num_members), **(tile_sizes or {})}
        self.groups = []
        for family in model.families:
            size = tile_sizes[family]
            variants = family_variants(model, family, merged=size > 1)
            self.groups.append(Group(family, variants, size, -(-num_members // size) + len(variants) - 1))

    # ---- host: routing ----------------------------------------------------------------

    def schedule(self, genomes: np.ndarray, active: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Where each member runs at each slot, for a chunk of `num_members` genomes; members not `active` (bool
        per member; None: all are) run no block, as if they had none, so no tile computes them.

        Returns `tiles` (per group, int32[S, num_tiles, tile_size]: member indices, `num_members` for an
        empty place), `variants` (per group, int32[S, num_tiles]: the branch each tile runs, -1 for none) and
        `rows` (int32[S, P]: each member's row in the slot's output rows, the last row, zero, for identity
        blocks and slots past its last block).
        """
        genomes = np.asarray(genomes)
        num, slots, model = len(genomes), self.model.num_slots, self.model
        if num != self.num_members:
            raise ValueError(f"this grouped form routes {self.num_members} members, got {num}")
        space = model.space
        num_blocks = np.asarray(space.gene("num_blocks").choices)[genomes[:, space.index("num_blocks")]]
        if active is not None:
            num_blocks = np.where(active, num_blocks, 0)
        widths = np.asarray(self.widths)[genomes[:, space.index("width")]]
        tiles = [np.full((slots, g.num_tiles, g.tile_size), num, np.int32) for g in self.groups]
        variants = [np.full((slots, g.num_tiles), -1, np.int32) for g in self.groups]
        offsets = np.cumsum([0] + [g.num_tiles * g.tile_size for g in self.groups])
        rows = np.full((slots, num), offsets[-1], np.int32)
        for slot in range(slots):
            ops = np.where(slot < num_blocks, np.asarray(model.ops)[genomes[:, space.index(f"block{slot}_op")]],
                           IDENTITY)
            for g, group in enumerate(self.groups):
                gene = OP_FAMILIES[group.family].variant_gene
                choices = (np.full(num, None) if gene is None else
                           np.asarray(space.gene(gene).choices, object)[genomes[:, space.index(gene)]])
                tile = 0
                for v, variant in enumerate(group.variants):
                    members = np.flatnonzero(np.isin(ops, variant.ops) & np.isin(widths, variant.widths)
                                             & np.isin(choices, np.asarray(variant.choices, object)))
                    for start in range(0, len(members), group.tile_size):
                        chunk = members[start:start + group.tile_size]
                        tiles[g][slot, tile, :len(chunk)] = chunk
                        variants[g][slot, tile] = v
                        rows[slot, chunk] = offsets[g] + tile * group.tile_size + np.arange(len(chunk))
                        tile += 1
        return {"tiles": tiles, "variants": variants, "rows": rows}

    # ---- device: the forward pass -------------------------------------------------------

    def apply(self, stored: Params, genomes: jax.Array, schedule, tokens, mask, dropout_key=None) -> jax.Array:
        """Logits [P, B, C] of every member (stored and genomes with a leading member axis), each equal to
        its standalone model's; `schedule` is `schedule(genomes)`, as arrays. Tokens and mask [B, L] are
        every member's, or [P, B, L] each member's own; the dropout key is shared, or one per member [P]."""
        model, wmax = self.model, self.model.max_width
        num, length = genomes.shape[0], tokens.shape[-1]
        tokens, mask = (jnp.broadcast_to(a, (num, *a.shape[-2:])) for a in (tokens, mask))

        def gene(name):
            return genomes[:, model.space.index(name)]

        widths = jnp.asarray(self.widths)[gene("width")]
        features = (jnp.arange(wmax)[None] < widths[:, None])[:, None, None, :]  # [P, 1, 1, W]
        tokens_mask = mask[..., None]
        x = jax.vmap(lambda table, tokens: jnp.take(table, tokens, axis=0))(stored["embed"]["embedding"], tokens)
        x = x + self._positions(stored, gene("positional"), gene("width"), length).astype(x.dtype)[:, None]
        x = jnp.where(features & tokens_mask, x, 0)
        rate = jnp.asarray(model.choices["dropout"])[gene("dropout")]
        norm_kind = norm_kind_of(model.choices["block0_norm"])
        genes = {part: jnp.stack([gene(f"block{i}_{part}") for i in range(model.num_slots)])
                 for part in ("op", "activation", "norm")}

        def run_slot(x, slot):
            params, op, activation, norm, tiles, variants, rows, index = slot
            norm_params = {n: params["norm"].get(n, _zero_norm(num, wmax)) for n in ("layernorm", "rmsnorm")}
            normalized = padded_norm(x, norm_kind[norm][:, None, None, None],
                                     jax.tree.map(lambda a: a[:, None, None, :], norm_params),
                                     widths[:, None, None, None])
            out = self._run_groups(params["op"], normalized, jnp.stack([op, activation], 1), genomes, tiles,
                                   variants, mask)
            h = out[rows]
            if dropout_key is not None:
                keys = jnp.broadcast_to(dropout_key, (num,))
                h = jax.vmap(lambda h, rate, width, key: dropout(h, rate, jax.random.fold_in(key, index), width))(
                    h, rate, widths, keys)
            return (x + h) * tokens_mask, None

        blocks = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), stored["blocks"])  # slot axis first
        slots = (blocks, genes["op"], genes["activation"], genes["norm"], schedule["tiles"], schedule["variants"],
                 schedule["rows"], jnp.arange(model.num_slots))
        x, _ = jax.lax.scan(run_slot, x, slots)
        final = jax.tree.map(lambda a: a[:, None, None, :], stored["final_norm"])  # LayerNorm's and RMSNorm's
        final_kind = norm_kind_of(model.final_norms)[jax.vmap(model.final_norm_index)(genomes)]
        x = padded_norm(x, final_kind[:, None, None, None], {"layernorm": final, "rmsnorm": final},
                        widths[:, None, None, None])
        pooled = self._pool(x, mask, gene("pooling"))
        if "head_dropout" in model.choices and dropout_key is not None:
            head_rate = jnp.asarray(model.choices["head_dropout"])[gene("head_dropout")]
            keys = jax.vmap(lambda key: jax.random.fold_in(key, HEAD_DROPOUT_KEY))(jnp.broadcast_to(dropout_key, (num,)))
            pooled = jax.vmap(dropout)(pooled, head_rate, keys, widths)
        head = stored["head"]
        return jnp.einsum("pbw,pwc->pbc", pooled, head["kernel"]) + head["bias"][:, None, :]

    def _positions(self, stored, positional, width_index, length):
        """[P, L, W]: each member's positional table, zero-padded."""
        wmax = self.model.max_width
        tables = {
            "learned": lambda: stored["position"][:, :length],
            "sinusoidal": lambda: jnp.stack([jnp.pad(sinusoidal_positions(length, w), ((0, 0), (0, wmax - w)))
                                             for w in self.widths])[width_index],
            "none": lambda: jnp.zeros((len(positional), length, wmax), jnp.float32),
        }
        names = self.model.choices["positional"]
        return jnp.select([positional[:, None, None] == i for i in range(len(names))], [tables[n]() for n in names])

    def _pool(self, x, mask, pooling):
        names = self.model.choices["pooling"]
        pooled = [jax.vmap(functools.partial(pool, pooling=name))(x, mask) for name in names]
        return jnp.select([pooling[:, None, None] == i for i in range(len(names))], pooled)

    def _run_groups(self, buffers, normalized, slot_genes, genomes, tiles, variants, mask):
        """Every group's tiles at one slot; their outputs as rows, one group after another, and a zero row."""
        extended = [jnp.concatenate([a, jnp.zeros_like(a[:1])])
                    for a in (normalized, buffers, slot_genes, genomes, mask)]
        x_ext, buffers_ext, aux_ext = extended[0], extended[1], tuple(extended[2:])
        outputs = []
        for group, group_tiles, group_variants in zip(self.groups, tiles, variants):
            branches = tuple(functools.partial(self._branch, group.family, v) for v in group.variants)
            out = tile_map(branches, x_ext, buffers_ext, aux_ext, group_tiles, group_variants)
            outputs.append(out.reshape(-1, *normalized.shape[1:]))
        return jnp.concatenate([*outputs, jnp.zeros_like(normalized[:1])])

    def _branch(self, family: str, variant: Variant, x, buffers, aux):
        """A tile's members [t, ...] of `family` through the family's population form for `variant`, at the
        largest of its widths; returns [t, B, L, W] zero-padded."""
        model, wmax, compute = self.model, self.model.max_width, max(variant.widths)
        space = model.space
        activations = model.choices["block0_activation"]
        gene = OP_FAMILIES[family].variant_gene

        def index_table(options, chosen):  # a gene's choice index -> its place in `chosen` (0 if absent)
            return jnp.asarray([chosen.index(o) if o in chosen else 0 for o in options])

        ops, widths = index_table(model.ops, variant.ops), index_table(self.widths, variant.widths)
        choices = index_table(model.variants(family), variant.choices)

        def member(x, buffer, slot_genes, genome, mask):
            rows = Rows(read=functools.partial(model.read, buffer), ops=variant.ops, variants=variant.choices,
                        widths=variant.widths, op=ops[slot_genes[0]],
                        variant=jnp.int32(0) if gene is None else choices[genome[space.index(gene)]],
                        width=widths[genome[space.index("width")]])
            out = OP_FAMILIES[family].rows(rows, x[..., :compute], mask, select_activation(activations, slot_genes[1]))
            return jnp.pad(out, ((0, 0), (0, 0), (0, wmax - compute)))

        return jax.vmap(member)(x, buffers, *aux)


def norm_kind_of(norms) -> jax.Array:
    """`padded_norm`'s kind of each norm choice."""
    return jnp.asarray([{"layernorm": 0, "rmsnorm": 1, "none": 2}[n] for n in norms])


def _zero_norm(num: int, width: int) -> Params:
    return {"scale": jnp.zeros((num, width)), "bias": jnp.zeros((num, width))}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def tile_map(branches, x_ext, params_ext, aux_ext, tiles, variants):
    """out[k] = branches[variants[k]](x_ext[tiles[k]], params_ext[tiles[k]], aux_ext[tiles[k]]), zeros where
    variants[k] is -1.

    Used tiles come first (`GroupedModel.schedule` fills them in order), so the loop stops after the last
    used one: empty tiles cost no iteration. Its backward pass recomputes each tile's branch (as
    `jax.checkpoint` would) and adds the tile's cotangents into full-size ones in place, so what it keeps
    for the backward pass is its inputs, once: differentiated as a scan over a switch, it would keep every
    branch's intermediates for every tile.
    """

    def gather(k):
        return jax.tree.map(lambda a: a[tiles[k]], (x_ext, params_ext, aux_ext))

    out_shape = jax.eval_shape(branches[0], *jax.tree.map(lambda a: a[tiles[0]], (x_ext, params_ext, aux_ext)))

    def one(k, out):
        return out.at[k].set(jax.lax.switch(variants[k], branches, *gather(k)))

    zeros = jnp.zeros((len(tiles), *out_shape.shape), out_shape.dtype)
    return jax.lax.fori_loop(0, _used(variants), one, zeros)


def _used(variants):
    return jnp.sum(variants >= 0, dtype=jnp.int32)


def _tile_map_forward(branches, x_ext, params_ext, aux_ext, tiles, variants):
    residuals = (x_ext, params_ext, aux_ext, tiles, variants)
    return tile_map(branches, x_ext, params_ext, aux_ext, tiles, variants), residuals


def _tile_map_backward(branches, residuals, cotangent):
    x_ext, params_ext, aux_ext, tiles, variants = residuals

    def branch_vjp(branch):
        def run(x, params, aux, ct):
            _, vjp = jax.vjp(lambda x, params: branch(x, params, aux), x, params)
            return vjp(ct)

        return run

    vjps = [branch_vjp(b) for b in branches]

    def one(k, grads):
        members = tiles[k]
        inputs = jax.tree.map(lambda a: a[members], (x_ext, params_ext, aux_ext))
        tile_grads = jax.lax.switch(variants[k], vjps, *inputs, cotangent[k])
        return jax.tree.map(lambda total, g: total.at[members].add(g), grads, tile_grads)

    zeros = (jnp.zeros_like(x_ext), jnp.zeros_like(params_ext))
    grad_x, grad_params = jax.lax.fori_loop(0, _used(variants), one, zeros)
    return grad_x, grad_params, None, None, None


tile_map.defvjp(_tile_map_forward, _tile_map_backward)
