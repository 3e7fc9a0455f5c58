"""Progressive dynamic hurdles inside a generation's batch (So et al. 2019, The Evolved Transformer).

A generation's children train together. At each hurdle step those still training are scored on validation;
the hurdle of that stage is the mean of their scores, or a configured quantile of them. Those below it stop
there and keep the score and parameters they reached; the rest train on in the same compiled programs,
stopped members masked (`evonas.population.Population.fit`). Host logic only: a few numbers per member.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hurdles:
    """Where the hurdles stand and how high.

    steps: the train steps after which members are judged, increasing, each below the full budget.
    quantile: the hurdle of a stage as a quantile (0 to 1) of the scores of the members still training;
        None: their mean, as So et al.
    """

    steps: tuple[int, ...]
    quantile: float | None = None

    def stages(self, total_steps: int) -> list[int]:
        """The step at which each stage ends: every hurdle, then the full budget."""
        return [*self.steps, total_steps]

    def check(self, total_steps: int, steps_per_call: int) -> None:
        """A ValueError unless the hurdles stand at increasing multiples of `steps_per_call` below `total_steps`."""
        if (not self.steps or list(self.steps) != sorted(set(self.steps)) or self.steps[0] < 1
                or self.steps[-1] >= total_steps or any(step % steps_per_call for step in self.steps)):
            raise ValueError(f"hurdle steps must increase, each a multiple of steps_per_call {steps_per_call} "
                             f"below the {total_steps} steps, got {list(self.steps)}")
        if self.quantile is not None and not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"the hurdle quantile must be from 0 to 1, got {self.quantile}")


def hurdle(scores: np.ndarray, quantile: float | None) -> float:
    """The height of a stage's hurdle from the scores of the members in it: the mean of the finite scores, or
    their `quantile` (linear interpolation between order statistics); inf if none is finite."""
    finite = np.asarray(scores, np.float64)[np.isfinite(scores)]
    if not finite.size:
        return np.inf
    if quantile is None:
        return math.fsum(finite) / len(finite)  # a correctly rounded sum: the same whatever the members' order
    return float(np.quantile(finite, quantile))


def passing(scores: np.ndarray, training: np.ndarray, quantile: float | None) -> np.ndarray:
    """Which members train on past a hurdle: those `training` whose score reaches (is at least) the hurdle of
    the scores of the members training. A non-finite score (a diverged member) never passes.

    Args:
        scores: float[N], each member's score at the hurdle (ignored where not `training`).
        training: bool[N], the members that reached this stage.
        quantile: None for the mean, else the quantile of the scores that sets the hurdle.

    Returns:
        bool[N], True for the members that train on.
    """
    scores, training = np.asarray(scores, np.float64), np.asarray(training, bool)
    height = hurdle(scores[training], quantile)
    return training & np.isfinite(scores) & (scores >= height)
