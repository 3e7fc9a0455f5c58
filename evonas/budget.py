"""Training budgets from the data and from the wall clock: what `--dataset`, `--epochs` and `--budget` decide.

Two kinds of decision, both recorded so that a run can be repeated:

- From the data, before a search starts (`resolve_values`): steps per child as epochs of the train split,
  the batch size and the padded length, for every option the user did not set. `config.json` holds the
  resolved values, so `--resume`, `evonas report` and `evonas retrain` read them back instead of deriving
  them again. The built-in ListOps task without `--epochs` keeps its own defaults (its histories stay as they were).
- From the wall clock, during a search with `--budget MINUTES` (`decide`): after every generation that compiled
  nothing, the mean seconds of those measured plan how many whole generations fit in the rest of the limit. The
  `Decision` lives in every checkpoint, so a resumed run goes on from it, counting the wall time of every session.

The arithmetic is in small pure functions, tested in tests/test_budget.py.
"""

import logging
import math
from typing import Any

from flax import struct

from evonas.errors import ConfigError

SEARCH_EPOCHS = 1.0  # real text: one pass over train per child; 150 steps were about half an epoch of MR
# Retrain gets 12x the search's epochs and keeps its best validation step. On MR, 8 genomes x 2 seeds retrained for
# 12 epochs instead of 4 scored +1.2 points of validation and +0.55 of test accuracy on average; after 4 epochs,
# 10 of the 16 had peaked at the last step (experiments/README.md, "Retrain length on MR"). ListOps keeps 4x its
# steps (retrain.STEPS_FACTOR).
RETRAIN_EPOCHS_FACTOR = 12
STEP_MULTIPLE = 25  # derived steps are whole calls of the default steps_per_call, so calls stay fused
BATCH_SIZES = (32, 64, 128)  # the smallest whose epoch is at most EPOCH_STEPS steps, else the largest
EPOCH_STEPS = 800
LENGTH_CAPS = {"word": 256, "byte": 1024}  # tokens per text at most when --max-length is not given
BUDGET_GENERATIONS = 1000  # with --budget and no --children, the most generations (the clock stops it sooner)
# The space a search of real text gets when the config names none. The default space (widths 32 and 64, no
# dropout above 0.2) is the built-in task's; on SST-2 its 30-minute search found one attention block of width 64
# at learning rate 0.01 that retrained to 78.4% and overfitted within two epochs, while a hand-set conv5 of width
# 128, dropout 0.3 and max pooling had reached 82.9% (experiments/README.md). So: Kim's CNN shape inside the space
# (widths to 128, dropout to 0.5, max pooling), at most 2 blocks and no LSTM or conv7, so that a 30-minute search on
# a 2-core CPU still trains about a hundred children. SST-2's: 96 children, retrained to 83.8% (experiments/README.md).
# The final norm is a gene: without it, a bag of words keeps each word vector's length, which is how much the word
# counts; on MR, 4 genomes x 3 seeds gained about a point of validation accuracy without it (experiments/README.md,
# "The final norm on MR").
REAL_TEXT_SPACE = {
    "max_blocks": 2,
    "ops": ["identity", "conv3", "conv5", "attention", "gated_mlp", "gru"],
    "activations": ["relu", "gelu"],
    "norms": ["layernorm", "none"],
    "widths": [64, 128],
    "heads": [2, 4],
    "ffn_expansions": [1, 2],
    "dropouts": [0.1, 0.3, 0.5],
    "positionals": ["learned", "none"],
    "poolings": ["max", "mean"],
    "learning_rates": [1e-3, 3e-3],
    "weight_decays": [0.0, 1e-4],
    "optimizers": ["adamw"],
    "final_norms": ["layernorm", "none"],
}


def batch_size_for(num_train: int) -> int:
    """The smallest of `BATCH_SIZES` that passes over `num_train` examples in at most `EPOCH_STEPS` steps."""
    return next((b for b in BATCH_SIZES if math.ceil(num_train / b) <= EPOCH_STEPS), BATCH_SIZES[-1])


def steps_for(num_train: int, batch_size: int, epochs: float, multiple: int = STEP_MULTIPLE) -> int:
    """Training steps for `epochs` passes over `num_train` examples, rounded up to a multiple of `multiple`."""
    steps = math.ceil(epochs * num_train / batch_size - 1e-9)  # 1e-9: 2.0000000001 steps of float error is 2
    return max(multiple, math.ceil(steps / multiple) * multiple)


def capped_length(length: int, tokenizer: str) -> int:
    """The padded length: the percentile's `length`, at most `LENGTH_CAPS[tokenizer]`."""
    return min(length, LENGTH_CAPS[tokenizer])


def derived(explicit: dict[str, Any], num_train: int, length: int | None) -> dict[str, Any]:
    """The values the data decides, for the options not in `explicit` (the user's, which always win).

    Args:
        explicit: the options the user set (command line and config file), by field name.
        num_train: examples in the train split.
        length: the padded length the length percentile gives; None for the built-in task, whose batch size and
            length stay its own.

    Returns:
        `epochs`, `steps`, `batch_size`, `max_length` and, for real text, `space`: those of them the user left unset.
    """
    values: dict[str, Any] = {}
    if length is not None and "space" not in explicit:
        values["space"] = REAL_TEXT_SPACE
    if length is not None and "batch_size" not in explicit:
        values["batch_size"] = batch_size_for(num_train)
    if "steps" not in explicit:
        epochs = explicit.get("epochs") or SEARCH_EPOCHS
        batch_size = explicit.get("batch_size") or values.get("batch_size") or _default("batch_size")
        values |= {"epochs": epochs, "steps": steps_for(num_train, batch_size, epochs)}
    if length is not None and "max_length" not in explicit:
        values["max_length"] = capped_length(length, explicit.get("tokenizer", "word"))
    return values


def before_data(values: dict[str, Any]) -> dict[str, Any]:
    """`values` to check before the data is read. When the data will set the steps, every check runs against the
    largest steps allowed, not the default's 150: the hurdles must be below the derived steps, which the config
    made after the data checks."""
    if "steps" in values or values.get("dataset") is None and values.get("epochs") is None:
        return values
    from evonas.options import SearchConfig

    return values | {"steps": int(SearchConfig.OPTIONS["steps"].high)}


def resolve_values(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (the user's options) with what the data and `--budget` decide for the rest; loads the data.

    Unchanged for the built-in task unless `epochs` or `budget_minutes` is given.

    Raises:
        ConfigError: both `steps` and `epochs` given.
    """
    from evonas.options import SearchConfig, describe

    if values.get("epochs") is not None and "steps" in values:
        raise ConfigError(f"give {describe('steps')} or {describe('epochs')}, not both: epochs set the steps")
    resolved = dict(values)
    if values.get("budget_minutes") is not None and "num_children" not in values:
        resolved["num_children"] = BUDGET_GENERATIONS * values.get("children_per_generation",
                                                                   _default("children_per_generation"))
    if values.get("dataset") is None and values.get("epochs") is None:
        return resolved
    from evonas.search import load_task

    config = SearchConfig(**before_data(resolved))
    logger = logging.getLogger("evonas")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the search loads the data again, and logs its splits then
    try:
        task = load_task(config)
    finally:
        logger.setLevel(level)
    length = None if config.dataset is None else task.max_length
    return resolved | derived(values, len(task.train.labels), length)


def _default(name: str) -> Any:
    from evonas.options import SearchConfig

    return SearchConfig.__dataclass_fields__[name].default


@struct.dataclass
class Decision:
    """How many generations a search runs, and how `--budget` planned it; part of every checkpoint."""

    generations: int  # generations the search runs: the plan of the last generation; without a plan, the most
    decided_after: int  # the generation whose end made the first plan (0-based); -1: none (yet, or no --budget)
    generation_seconds: float  # the seconds of that generation
    elapsed_seconds: float  # the search's wall time then, over every session
    measured: int = 0  # generations that compiled nothing, from that one on
    measured_seconds: float = 0.0  # their seconds in all

    @classmethod
    def undecided(cls, generations: int) -> "Decision":
        return cls(generations=generations, decided_after=-1, generation_seconds=0.0, elapsed_seconds=0.0)

    def to_json(self, budget_minutes: float) -> dict[str, Any]:
        return {"minutes": budget_minutes, "generations": int(self.generations),
                "decided_after_generation": int(self.decided_after),
                "generation_seconds": float(self.generation_seconds), "elapsed_seconds": float(self.elapsed_seconds),
                "mean_generation_seconds": float(self.measured_seconds) / max(1, int(self.measured))}


def generations_within(budget_seconds: float, elapsed_seconds: float, generation_seconds: float, done: int,
                       most: int) -> int:
    """Generations in all: the `done` ones, and as many more of `generation_seconds` as the rest of the budget
    holds, at most `most`."""
    left = budget_seconds - elapsed_seconds
    more = math.floor(left / generation_seconds) if left > 0 and generation_seconds > 0 else 0
    return max(done, min(most, done + more))


def decide(decision: Decision, budget_minutes: float | None, generation: int, generation_seconds: float,
           elapsed_seconds: float, compiled: bool, most: int) -> Decision:
    """The plan after `generation` ended, `elapsed_seconds` into the search: at most `most` generations in all.

    Every generation that `compiled` nothing plans again how many whole generations fit in the rest of the limit,
    each as slow as the mean of those measured so far, or as the last one if that was slower (evolution drifts
    towards larger models): the search stops when the next one would end past the limit. A generation that
    compiled is no guide to the next: before any plan, it stops the search only if the next, as slow as it, would
    pass the limit; after one, it plans from the mean. No budget plans nothing.
    """
    if budget_minutes is None:
        return decision
    done, budget_seconds = generation + 1, 60.0 * budget_minutes
    if decision.decided_after < 0:
        if compiled:
            if elapsed_seconds + generation_seconds <= budget_seconds:
                return decision
            return Decision(generations=done, decided_after=generation, generation_seconds=generation_seconds,
                            elapsed_seconds=elapsed_seconds)
        decision = Decision(generations=decision.generations, decided_after=generation,
                            generation_seconds=generation_seconds, elapsed_seconds=elapsed_seconds)
    measured = int(decision.measured) + (not compiled)
    total = float(decision.measured_seconds) + (0.0 if compiled else generation_seconds)
    mean = total / measured if measured else generation_seconds
    slowest = mean if compiled else max(mean, generation_seconds)
    return decision.replace(generations=generations_within(budget_seconds, elapsed_seconds, slowest, done, most),
                            measured=measured, measured_seconds=total)
