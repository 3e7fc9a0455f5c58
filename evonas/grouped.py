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

from evonas.layers import (
    IDENTITY,
    OP_FAMILIES,
    Params,
    Rows,
    dropout,
    padded_norm,
    pool,
    select_activation,
    sinusoidal_positions,
)
from evonas.supernet import PopulationModel


@dataclasses.dataclass(frozen=True)
class Group:
    """One op family's tiles at a block slot: `num_tiles` tiles of `tile_size` members, each running one of
    `widths` (or, for a family computed at the largest width, all of them)."""

    family: str
    widths: tuple[tuple[int, ...], ...]  # per variant (a tile's branch): the widths its members may have
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


class GroupedModel:
    """Forward pass of a chunk of members in the grouped form; `schedule` routes them on the host."""

    def __init__(self, model: PopulationModel, num_members: int, tile_sizes: dict[str, int] | None = None):
        self.model, self.num_members = model, num_members
        self.widths = tuple(model.choices["width"])
        tile_sizes = {**default_tile_sizes(model, num_members), **(tile_sizes or {})}
        self.groups = []
        for family in model.families:
            widths = (self.widths,) if OP_FAMILIES[family].any_width else tuple((w,) for w in self.widths)
            size = tile_sizes[family]
            self.groups.append(Group(family, widths, size, -(-num_members // size) + len(widths) - 1))

    # ---- host: routing ----------------------------------------------------------------

    def schedule(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Where each member runs at each slot, for a chunk of `num_members` genomes.

        Returns `tiles` (per group, int32[S, num_tiles, tile_size]: member indices, `num_members` for an
        empty place), `variants` (per group, int32[S, num_tiles]: the branch each tile runs, -1 for none) and
        `rows` (int32[S, P]: each member's row in the slot's output rows, the last row, zero, for identity
        blocks and slots past its last block).
        """
        genomes = np.asarray(genomes)
        num, slots = len(genomes), self.model.num_slots
        if num != self.num_members:
            raise ValueError(f"this grouped form routes {self.num_members} members, got {num}")
        space = self.model.space
        ops = np.asarray(self.model.ops)
        num_blocks = np.asarray(space.gene("num_blocks").choices)[genomes[:, space.index("num_blocks")]]
        width_index = genomes[:, space.index("width")]
        tiles = [np.full((slots, g.num_tiles, g.tile_size), num, np.int32) for g in self.groups]
        variants = [np.full((slots, g.num_tiles), -1, np.int32) for g in self.groups]
        offsets = np.cumsum([0] + [g.num_tiles * g.tile_size for g in self.groups])
        rows = np.full((slots, num), offsets[-1], np.int32)
        for slot in range(slots):
            slot_ops = np.where(slot < num_blocks, ops[genomes[:, space.index(f"block{slot}_op")]], IDENTITY)
            for g, group in enumerate(self.groups):
                members_of_family = np.isin(slot_ops, OP_FAMILIES[group.family].ops)
                tile = 0
                for variant, widths in enumerate(group.widths):
                    in_variant = members_of_family & np.isin(np.asarray(self.widths)[width_index], widths)
                    members = np.flatnonzero(in_variant)
                    for start in range(0, len(members), group.tile_size):
                        chunk = members[start:start + group.tile_size]
                        tiles[g][slot, tile, :len(chunk)] = chunk
                        variants[g][slot, tile] = variant
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
        norm_kind = jnp.asarray([{"layernorm": 0, "rmsnorm": 1, "none": 2}[n] for n in model.choices["block0_norm"]])
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
        final = jax.tree.map(lambda a: a[:, None, None, :], stored["final_norm"])
        x = padded_norm(x, 0, {"layernorm": final, "rmsnorm": final}, widths[:, None, None, None])
        pooled = self._pool(x, mask, gene("pooling"))
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
            branches = tuple(functools.partial(self._branch, group.family, widths) for widths in group.widths)
            out = tile_map(branches, x_ext, buffers_ext, aux_ext, group_tiles, group_variants)
            outputs.append(out.reshape(-1, *normalized.shape[1:]))
        return jnp.concatenate([*outputs, jnp.zeros_like(normalized[:1])])

    def _branch(self, family: str, widths: tuple[int, ...], x, buffers, aux):
        """A tile's members [t, ...] of `family`, whose widths are among `widths`, through the family's
        population form at the largest of them; returns [t, B, L, W] zero-padded."""
        model, wmax, compute = self.model, self.model.max_width, max(widths)
        space, ops = model.space, model.family_ops(family)
        op_table = jnp.asarray([ops.index(op) if op in ops else 0 for op in model.ops])
        activations = model.choices["block0_activation"]
        variant_gene = OP_FAMILIES[family].variant_gene
        width_table = jnp.asarray([widths.index(w) if w in widths else 0 for w in self.widths])

        def member(x, buffer, slot_genes, genome, mask):
            rows = Rows(read=functools.partial(model.read, buffer), ops=ops, variants=model.variants(family),
                        widths=widths, op=op_table[slot_genes[0]],
                        variant=jnp.int32(0) if variant_gene is None else genome[space.index(variant_gene)],
                        width=width_table[genome[space.index("width")]])
            out = OP_FAMILIES[family].rows(rows, x[..., :compute], mask, select_activation(activations, slot_genes[1]))
            return jnp.pad(out, ((0, 0), (0, 0), (0, wmax - compute)))

        return jax.vmap(member)(x, buffers, *aux)


def _zero_norm(num: int, width: int) -> Params:
    return {"scale": jnp.zeros((num, width)), "bias": jnp.zeros((num, width))}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def tile_map(branches, x_ext, params_ext, aux_ext, tiles, variants):
    """out[k] = branches[variants[k]](x_ext[tiles[k]], params_ext[tiles[k]], aux_ext[tiles[k]]), zeros where
    variants[k] is -1.

    Its backward pass recomputes each tile's branch (as `jax.checkpoint` would) and adds the tile's
    cotangents into full-size ones in place, so what it keeps for the backward pass is its inputs, once:
    differentiated as a scan over a switch, it would keep every branch's intermediates for every tile.
    """

    def one(args):
        members, variant = args
        inputs = jax.tree.map(lambda a: a[members], (x_ext, params_ext, aux_ext))
        return jax.lax.switch(variant + 1, [_zeros, *branches], *inputs)

    return jax.lax.map(one, (tiles, variants))


def _zeros(x, *_):
    return jnp.zeros_like(x)


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

    def skip(x, params, aux, ct):
        return jnp.zeros_like(x), jnp.zeros_like(params)

    def one(grads, args):
        members, variant, ct = args
        inputs = jax.tree.map(lambda a: a[members], (x_ext, params_ext, aux_ext))
        tile_grads = jax.lax.switch(variant + 1, [skip] + [branch_vjp(b) for b in branches], *inputs, ct)
        return jax.tree.map(lambda total, g: total.at[members].add(g), grads, tile_grads), None

    zeros = (jnp.zeros_like(x_ext), jnp.zeros_like(params_ext))
    (grad_x, grad_params), _ = jax.lax.scan(one, zeros, (tiles, variants, cotangent))
    return grad_x, grad_params, None, None, None


tile_map.defvjp(_tile_map_forward, _tile_map_backward)
