"""Checkpoints of a search, one per generation, so that a killed search continues exactly where it stopped.

A checkpoint is a `Progress` pytree that orbax saves in `<checkpoints dir>/<generations done>/`. Orbax
writes it into `<step>.orbax-checkpoint-tmp` and renames that directory only once every file is in it, so
a step directory is whole or absent: a kill in the middle of a write leaves only the temporary directory,
which orbax replaces when the resumed run writes that step again. Tensorstore's OCDBT files carry
checksums, so bytes garbled afterwards fail to restore rather than restoring wrong values;
`Checkpoints.restore_latest` then falls back to the previous checkpoint.
"""

import warnings
from pathlib import Path
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import struct

from evonas.errors import RunDirError

KEEP = 2  # the newest checkpoint, and one to fall back on if the newest is damaged


class ResumeError(RunDirError):
    """A run directory that cannot be continued; the message names the file at fault."""


@struct.dataclass
class Progress:
    """What a search has done: enough to continue it bit for bit.

    The PRNG key needs no entry: each generation's key is `fold_in(key(seed), generation)`, so
    `strategy.generation` is the whole random state of the loop.
    """

    strategy: Any  # the strategy's own state (`Strategy.state_type`); `strategy.generation` generations are done
    history_bytes: int  # length of history.jsonl after those generations; later bytes are a lost generation's
    wall_seconds: float  # spent on those generations, over every session of the run
    compilations: int  # programs compiled for them, over every session of the run
    budget: Any = None  # evonas.budget.Decision: how many generations the run has, and how --budget decided it
    parent_params: Any = None  # with --inherit, the living members' parameters (`evonas.inherit.empty_store`)


class Checkpoints:
    """The checkpoints of one run, saved synchronously: a generation takes seconds, a save about 0.1 s."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).absolute()
        # Each process of a multi-process search keeps its own copy in its own run directory: the progress is
        # host-side data that every process computes alike, so no process waits for another to save.
        this_process = jax.process_index()
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False, create=False, preservation_policy=ocp.checkpoint_managers.LatestN(KEEP),
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=this_process, active_processes={this_process},
                barrier_sync_key_prefix=f"process{this_process}"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self._manager.close()

    def save(self, progress: Progress) -> None:
        """Saves `progress` as step `progress.strategy.generation`; an existing step is an error, never skipped."""
        step = int(progress.strategy.generation)
        self._manager.save(step, args=ocp.args.StandardSave(jax.tree.map(np.asarray, progress)), force=True)

    def restore_latest(self, template: Progress) -> Progress:
        """The newest checkpoint that restores, shaped like `template`.

        Each damaged checkpoint is named in a warning; once an older one restores, the damaged newer
        ones are deleted so that the run can write those steps again.

        Raises:
          ResumeError: if there is no checkpoint, or none restores.
        """
        damaged = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                progress = self._manager.restore(step, args=ocp.args.StandardRestore(jax.tree.map(np.asarray, template)))
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types for damaged files
                warnings.warn(f"checkpoint {self.directory / str(step)} is damaged and is skipped: "
                              f"{type(error).__name__}: {_first_line(error)}", stacklevel=2)
                damaged.append(step)
                continue
            for newer in damaged:
                self._manager.delete(newer)
            return progress
        if damaged:
            raise ResumeError(f"no usable checkpoint in {self.directory}: every one is damaged")
        raise ResumeError(f"no checkpoint in {self.directory}; is this a run directory of `evonas search`?")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]
