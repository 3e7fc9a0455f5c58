"""Weight inheritance: a child starts from its parent's trained parameters where it keeps a part's op and shape.

A *part* is a unit of a standalone model's parameters whose shapes and role a few genes fix: the embedding,
the learned positions, the final norm and the head (each sized by the width), and per block its norm (kind,
width) and its op (op, width, variant: attention's heads, the gated MLP's expansion). `parts` describes each
part of an architecture; a child inherits a part when its parent holds the same part (same block position)
with the same description (`matching_parts`), and every other part is initialised afresh. Activations,
dropout and the training genes hold no parameters, so changing them keeps every part. The optimizer state
always starts afresh.

Crossover: a child inherits from its first parent only (the tournament winner whose genome the child starts
from), part by part where that parent's part matches. Parts of two separately trained networks are not
co-adapted (one's block reads features that the other's embedding never produced), so mixing them would not
start the child from a function either parent computed.

In the stored layout (`evonas.supernet`) a part is whole leaves, or one slot's row of the block leaves, and a
matching part's used corner in the parent's stored arrays is exactly what the child reads: copying the
parent's stored leaves (or rows) gives the child its parent's exact-size parameters. `stored_mask` says,
per stored leaf, which rows are inherited; `Steps.init_member` mixes them with a fresh draw on device, so
one compiled program serves every genome. The search keeps the stored parameters of the members still
alive in the aging population (`ParentStore`), and checkpoints them.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evonas.layers import Params
from evonas.models import Architecture, count_params, part_sizes
from evonas.ops import IDENTITY
from evonas.space import SearchSpace

Part = tuple  # ("embed",), ("position",), ("final_norm",), ("head",), ("block", i, "norm") or ("block", i, "op")
Mask = Any  # bool pytree shaped like the stored parameters' tree: leaves bool[] (whole leaf) or bool[num_slots]


def parts(arch: Architecture) -> dict[Part, tuple]:
    """Each part that `arch` holds parameters for, and what fixes its shapes and meaning."""
    described = {("embed",): (arch.width,), ("head",): (arch.width,)}
    if arch.final_norm != "none":
        described[("final_norm",)] = (arch.final_norm, arch.width)
    if arch.positional == "learned":
        described[("position",)] = (arch.width,)
    for i, block in enumerate(arch.blocks):
        if block.op == IDENTITY:  # identity blocks hold no parameters, not even their norm's
            continue
        described[("block", i, "op")] = (block.op, arch.width, arch.variant(block.op))
        if block.norm != "none":
            described[("block", i, "norm")] = (block.norm, arch.width)
    return described


def matching_parts(child: Architecture, parent: Architecture) -> frozenset[Part]:
    """The child's parts that the parent holds, at the same place, with the same description."""
    theirs = parts(parent)
    return frozenset(part for part, described in parts(child).items() if theirs.get(part) == described)


def standalone_part(path: tuple[str, ...]) -> Part:
    """The part of a standalone parameter at `path` (keys of `TextClassifier`'s parameter tree)."""
    if path[0].startswith("block"):
        return ("block", int(path[0][len("block"):]), "norm" if path[1] == "norm" else "op")
    return (path[0],)


def inherited_share(standalone_shapes: Params, matched: frozenset[Part]) -> float:
    """The fraction of a child's standalone parameters (`model.standalone_shapes(arch)`) in `matched` parts."""
    sizes = jax.tree_util.tree_flatten_with_path(standalone_shapes)[0]
    total = count_params(standalone_shapes)
    kept = sum(int(np.prod(leaf.shape)) for path, leaf in sizes if standalone_part(tuple(k.key for k in path)) in matched)
    return kept / total if total else 0.0


def stored_mask(stored_shapes: Params, arch: Architecture, matched: frozenset[Part], num_slots: int) -> Mask:
    """Per stored leaf (of one member, `PopulationModel.stored_shapes`), whether it is inherited: bool[] for
    the embedding, positions, final norm and head, bool[num_slots] per block leaf (a slot's norm rows of the
    child's own norm kind, or its op buffer)."""
    norms = [arch.blocks[i].norm if i < len(arch.blocks) else None for i in range(num_slots)]

    def inherited(path, leaf):
        keys = tuple(k.key for k in path)
        if keys[0] != "blocks":
            return np.bool_(standalone_part(keys) in matched)
        if keys[1] == "norm":
            return np.array([("block", i, "norm") in matched and norms[i] == keys[2] for i in range(num_slots)])
        return np.array([("block", i, "op") in matched for i in range(num_slots)])

    return jax.tree_util.tree_map_with_path(inherited, stored_shapes)


def mix(fresh: Params, inherited: Params, mask: Mask) -> Params:
    """One member's stored parameters: `inherited` where `mask` says so, `fresh` elsewhere (traceable)."""

    def pick(new, old, keep):
        return jnp.where(keep.reshape(keep.shape + (1,) * (new.ndim - keep.ndim)), old, new)

    return jax.tree.map(pick, fresh, inherited, mask)


# ---- the living population's parameters ------------------------------------------------------------------

NO_ID = -1


def empty_store(stored_shapes: Params, population_size: int, num_genes: int) -> dict[str, Any]:
    """A `ParentStore` with no member: host arrays `ids` int32[P] (NO_ID where empty), `genomes` int32[P, G]
    and `params` (the stored tree, leading axis P). Its shapes never change, so a checkpoint restores into it."""
    return {"ids": np.full(population_size, NO_ID, np.int32), "genomes": np.zeros((population_size, num_genes), np.int32),
            "params": jax.tree.map(lambda s: np.zeros((population_size, *s.shape), s.dtype), stored_shapes)}


def keep_alive(store: dict[str, Any], alive_ids: np.ndarray, new_ids: np.ndarray, new_genomes: np.ndarray,
               new_params: Params) -> dict[str, Any]:
    """The store of the members `alive_ids` (the strategy state's `ids`, NO_ID where empty): each from the
    new children (`new_ids`, their genomes and trained stored parameters) or else from `store`. Members that
    died are dropped, so the store holds at most one population."""
    alive_ids = np.asarray(alive_ids)
    pool_ids = np.concatenate([np.asarray(new_ids, np.int32), store["ids"]])
    genomes = np.concatenate([np.asarray(new_genomes, np.int32), store["genomes"]])
    params = jax.tree.map(lambda new, old: np.concatenate([np.asarray(new), old]), new_params, store["params"])
    found = {int(i): row for row, i in enumerate(pool_ids) if i != NO_ID}
    rows = np.array([0 if i == NO_ID else found[int(i)] for i in alive_ids], int)  # an empty slot's row is unused
    return {"ids": alive_ids.astype(np.int32), "genomes": genomes[rows], "params": jax.tree.map(lambda a: a[rows], params)}


def plan(model, space: SearchSpace, store: dict[str, Any], children: np.ndarray,
         parents: np.ndarray) -> tuple[Params, Mask, np.ndarray]:
    """What each child starts from: its first parent's stored parameters (zeros where it has none in
    `store`), the mask of the parts it inherits (`stored_mask`), and the share of its standalone parameters
    they hold. `model` is the `PopulationModel`; `parents` int32[N, 2] birth ids (NO_ID where none)."""
    rows = {int(i): r for r, i in enumerate(store["ids"]) if i != NO_ID}
    starts, masks, shares = [], [], []
    for child, first_parent in zip(np.asarray(children), np.asarray(parents)[:, 0]):
        arch = Architecture.from_genome(space, child)
        row = rows.get(int(first_parent))
        matched = frozenset() if row is None else matching_parts(
            arch, Architecture.from_genome(space, store["genomes"][row]))
        starts.append(row if row is not None else 0)
        masks.append(stored_mask(model.stored_shapes, arch, matched, model.num_slots))
        sizes = part_sizes(arch, model.vocab_size, model.max_length, model.num_classes)
        shares.append(sum(sizes[part] for part in matched) / sum(sizes.values()))
    params = jax.tree.map(lambda a: a[np.asarray(starts, int)], store["params"])
    return params, jax.tree.map(lambda *m: np.stack(m), *masks), np.asarray(shares)
