"""A running search seen from outside: TensorBoard scalars and wall time per generation, and the progress bar's text.

Each generation adds, at TensorBoard step = children evaluated so far (tensorboardX writes the event files; it
needs no TensorFlow):

- `fitness/best_so_far`: the best fitness of any child yet;
- `population/best`, `population/median`, `population/worst`: fitness in the living population, the last
  `population_size` children (aging evolution's population; diverged children are left out);
- `population/diversity`: the fraction of genes in which two living members differ, averaged over pairs;
- `progress/train_steps`, `progress/seconds`, `progress/generation_seconds`, `progress/compilations`.

`generations.jsonl` keeps each generation's cumulative seconds and compilations as well, for `evonas report`'s
curves against wall time: history.jsonl holds no times, so that a seed and config give it bit for bit.
"""

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from evonas.fitness import best_record, is_candidate

TENSORBOARD = "tensorboard"  # the run directory's subdirectory of TensorBoard event files
GENERATIONS = "generations.jsonl"  # one line per generation: children, wall_seconds and compilations so far

logger = logging.getLogger(__name__)


def living_population(history: list[dict[str, Any]], population_size: int) -> list[dict[str, Any]]:
    """The last `population_size` children: the population aging evolution samples its parents from."""
    return history[-population_size:]


def diversity(genomes: np.ndarray) -> float:
    """The fraction of genes in which two genomes differ, averaged over every pair; 0 for fewer than two."""
    genomes = np.asarray(genomes)
    if len(genomes) < 2:
        return 0.0
    differ = genomes[:, None, :] != genomes[None, :, :]  # [n, n, num_genes]
    pairs = len(genomes) * (len(genomes) - 1)  # ordered pairs; the diagonal adds nothing
    return float(differ.mean(axis=2).sum() / pairs)


def population_scalars(history: list[dict[str, Any]], population_size: int, steps: int) -> dict[str, float]:
    """The TensorBoard scalars of a search whose children so far are `history` (time and compilations aside)."""
    living = living_population(history, population_size)
    fitness = [r["fitness"] for r in living if is_candidate(r)]
    scalars = {"population/diversity": diversity([r["genome"] for r in living]),
               "progress/train_steps": float(sum(r.get("steps", steps) for r in history))}  # hurdles stop some early
    if best_so_far := best_child(history):
        scalars["fitness/best_so_far"] = best_so_far["fitness"]
    if fitness:
        scalars.update({"population/best": max(fitness), "population/median": float(np.median(fitness)),
                        "population/worst": min(fitness)})
    return scalars


def best_child(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The child of highest fitness that did not diverge nor break a constraint; the first of equals."""
    return best_record(history)


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class GenerationMonitor:
    """Writes a search's per-generation scalars and times into its run directory, from generation
    `done_generations` on; what an earlier session wrote for later generations (which are redone) is dropped."""

    def __init__(self, run_dir: str | Path, population_size: int, steps: int, num_generations: int,
                 done_generations: int):
        self.run_dir = Path(run_dir)
        self.population_size, self.steps, self.num_generations = population_size, steps, num_generations
        if not done_generations:
            shutil.rmtree(self.run_dir / TENSORBOARD, ignore_errors=True)  # a previous run's, which this one replaces
        self._keep_generations(done_generations)
        # purge_step hides the events of an earlier session at steps after the last kept generation's.
        done_children = self._kept[-1]["children"] if self._kept else 0
        self._writer = _tensorboard_writer(self.run_dir / TENSORBOARD, done_children + 1 if self._kept else None)
        self._start, self._generations, self._best = time.perf_counter(), 0, None
        self._left = None

    def _keep_generations(self, done_generations: int) -> None:
        path = self.run_dir / GENERATIONS
        lines = path.read_text().splitlines() if path.is_file() and done_generations else []
        self._kept = [r for r in map(json.loads, lines) if r["generation"] < done_generations]
        path.write_text("".join(json.dumps(r) + "\n" for r in self._kept))

    def record(self, generation: int, history: list[dict[str, Any]], wall_seconds: float, compilations: int) -> None:
        """Called once `generation` is done and `history` holds its children."""
        wall_seconds, compilations = float(wall_seconds), int(compilations)  # a restored checkpoint's are numpy
        previous = self._kept[-1]["wall_seconds"] if self._kept else 0.0
        scalars = population_scalars(history, self.population_size, self.steps)
        scalars.update({"progress/seconds": wall_seconds, "progress/generation_seconds": wall_seconds - previous,
                        "progress/compilations": float(compilations)})
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, global_step=len(history))
            self._writer.flush()  # so that TensorBoard shows the generation now, and a kill loses nothing
        line = {"generation": generation, "children": len(history), "wall_seconds": wall_seconds,
                "compilations": compilations}
        with open(self.run_dir / GENERATIONS, "a") as file:
            file.write(json.dumps(line) + "\n")
        self._kept.append(line)
        self._generations += 1
        self._best = best_child(history)
        per_generation = (time.perf_counter() - self._start) / self._generations  # this session's, compiling included
        self._left = per_generation * (self.num_generations - generation - 1)

    def postfix(self) -> dict[str, str]:
        """The progress bar's text: the best validation accuracy so far and an estimate of the time left."""
        postfix = {}
        if self._best is not None:
            postfix["best_val_accuracy"] = f"{self._best['val_accuracy']:.3f}"
        if self._left is not None:
            postfix["left"] = format_seconds(self._left)
        return postfix

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(path: Path, purge_step: int | None):
    """tensorboardX's writer; None, with a warning, where evonas runs from a source tree without it (e.g. on an
    accelerator image that cannot install packages): generations.jsonl is written either way."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        logger.warning("tensorboardX is not installed: no TensorBoard events in %s (pip install tensorboardX)", path)
        return None
    return SummaryWriter(str(path), purge_step=purge_step)
