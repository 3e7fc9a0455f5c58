"""The one definition of fitness: from a child's metrics to what selection uses.

A child's metrics are a dict of arrays over children (`val_accuracy`, `val_loss`, `train_loss`, `params`, `flops`,
`latency_ms_b1`, `latency_ms_b64` and the bool `diverged`). `Objective`, built from a search's config, turns them into

- `fitness`, float32[N]: the weighted sum of the config's `objective`, higher is better; -inf for a child that
  diverged or breaks a constraint, which makes it the worst, never a parent and never the best;
- `selection`, what the strategy's `tell` takes: that fitness, or in Pareto mode float32[N, K], one maximized
  column per Pareto objective (a minimized metric negated), every column -inf for the same children.

Both are pure `jnp`, so they also run inside a jitted search. A history record keeps `fitness` as a number, or
null for a child that is not a candidate (`is_candidate`), which is how retrain, the summary, the monitor and the
report choose the best.

    objective = Objective.from_options({"val_accuracy": 1.0, "params": -1e-7}, {"params": "<= 1e6"}, {})
    objective.fitness({"val_accuracy": jnp.array([.5, .6]), "params": jnp.array([1e5, 2e6]),
                       "diverged": jnp.array([False, False])})  # [0.49, -inf]
"""

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evonas.errors import ConfigError
from evonas.pareto import front_mask

# Metrics a child can be judged on, with the direction that makes each better.
METRICS = {"val_accuracy": "max", "val_loss": "min", "train_loss": "min", "params": "min", "flops": "min",
           "latency_ms_b1": "min", "latency_ms_b64": "min"}
PARETO_FILE = "pareto.json"  # in a Pareto search's run directory: the front of every child seen
LATENCY_BATCH_SIZES = {"latency_ms_b1": 1, "latency_ms_b64": 64}  # measured only when the objective names them
_BOUND = re.compile(r"\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")

Metrics = dict[str, jax.Array]  # name -> float32[N]; "diverged" -> bool[N]


@dataclasses.dataclass(frozen=True)
class Constraint:
    metric: str
    operator: str  # "<=" or ">="
    bound: float

    def holds(self, metrics: Metrics) -> jax.Array:
        value = jnp.asarray(metrics[self.metric], jnp.float32)
        return value <= self.bound if self.operator == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.operator} {self.bound:g}"


@dataclasses.dataclass(frozen=True)
class Objective:
    """Weights of the fitness, hard constraints, and the Pareto objectives (empty: a single objective)."""

    weights: tuple[tuple[str, float], ...] = (("val_accuracy", 1.0),)
    constraints: tuple[Constraint, ...] = ()
    pareto: tuple[tuple[str, str], ...] = ()  # (metric, "max" or "min")

    @classmethod
    def from_options(cls, objective: dict[str, Any], constraints: dict[str, Any], pareto: dict[str, Any],
                     names: tuple[str, str, str] = ("objective", "constraints", "pareto")) -> "Objective":
        """Checks the three config values; an error names the option (`names`) and what it allows."""
        weights = tuple((metric, _weight(names[0], metric, weight)) for metric, weight in
                        _metric_items(names[0], objective, allow_empty=False))
        bounds = tuple(_constraint(names[1], metric, text) for metric, text in
                       _metric_items(names[1], constraints, allow_empty=True))
        directions = tuple((metric, _direction(names[2], metric, sense)) for metric, sense in
                           _metric_items(names[2], pareto, allow_empty=True))
        if len(directions) == 1:
            raise ConfigError(f"{names[2]} needs two or more metrics to trade off (or none), got {len(directions)}")
        return cls(weights, bounds, directions)

    @property
    def is_pareto(self) -> bool:
        return bool(self.pareto)

    @property
    def num_objectives(self) -> int:
        """Columns of `selection`; 0 means a single float per child."""
        return len(self.pareto)

    def metrics_used(self) -> set[str]:
        return ({m for m, _ in self.weights} | {c.metric for c in self.constraints} | {m for m, _ in self.pareto})

    def latency_batch_sizes(self) -> dict[str, int]:
        """The latencies to measure, by metric name: only those that the fitness, a constraint or Pareto uses."""
        return {name: size for name, size in LATENCY_BATCH_SIZES.items() if name in self.metrics_used()}

    def feasible(self, metrics: Metrics) -> jax.Array:
        """bool[N]: did not diverge (where `metrics` says so) and meets every constraint."""
        first = jnp.asarray(next(iter(metrics.values())))
        ok = ~jnp.asarray(metrics["diverged"], bool) if "diverged" in metrics else jnp.ones(first.shape, bool)
        for constraint in self.constraints:
            ok = ok & constraint.holds(metrics)
        return ok

    def fitness(self, metrics: Metrics) -> jax.Array:
        """float32[N]: the weighted sum; -inf for a child that is not feasible or whose sum is not finite."""
        total = sum(weight * jnp.asarray(metrics[metric], jnp.float32) for metric, weight in self.weights)
        return jnp.where(self.feasible(metrics) & jnp.isfinite(total), total, -jnp.inf).astype(jnp.float32)

    def selection(self, metrics: Metrics) -> jax.Array:
        """What the strategy is told: `fitness`, or in Pareto mode float32[N, K] maximized columns."""
        if not self.is_pareto:
            return self.fitness(metrics)
        columns = jnp.stack([jnp.asarray(metrics[m], jnp.float32) * (1.0 if sense == "max" else -1.0)
                             for m, sense in self.pareto], axis=-1)
        keep = self.feasible(metrics) & jnp.all(jnp.isfinite(columns), axis=-1)
        return jnp.where(keep[:, None], columns, -jnp.inf)

    def pareto_front(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """What pareto.json holds: the candidates (`is_candidate`) of `history` that no other candidate dominates
        on the Pareto objectives, by the first objective, best first."""
        candidates = [r for r in history if is_candidate(r)]
        signs = np.asarray([1.0 if sense == "max" else -1.0 for _, sense in self.pareto])
        values = np.asarray([[r[m] for m, _ in self.pareto] for r in candidates], float).reshape(-1, len(signs))
        on_front = front_mask(values * signs)
        front = sorted((r for r, keep in zip(candidates, on_front, strict=True) if keep),
                       key=lambda r: (-signs[0] * r[self.pareto[0][0]], r["id"]))
        return {**self.to_json(), "children": len(history), "candidates": len(candidates), "front": front}

    def to_json(self) -> dict[str, Any]:
        return {"objective": dict(self.weights), "constraints": [str(c) for c in self.constraints],
                "pareto": dict(self.pareto)}


def is_candidate(record: dict[str, Any]) -> bool:
    """Whether a history record may be the best (and retrain's pick): it did not diverge and broke no constraint."""
    return record.get("fitness") is not None and not record["diverged"]


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate of highest fitness, the first of equals; None if there is none."""
    return max((r for r in history if is_candidate(r)), key=lambda r: r["fitness"], default=None)


def _metric_items(name: str, values: Any, allow_empty: bool) -> list[tuple[str, Any]]:
    if not isinstance(values, dict) or not values and not allow_empty:
        raise ConfigError(f"{name} must be a{'' if allow_empty else ' non-empty'} JSON object whose keys are metrics "
                          f"({', '.join(METRICS)}), got {values!r}")
    if unknown := sorted(set(values) - set(METRICS)):
        raise ConfigError(f"{name}: unknown metrics {unknown}; known are {', '.join(METRICS)}")
    return list(values.items())


def _weight(name: str, metric: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ConfigError(f"{name}: the weight of {metric} must be a finite number, got {weight!r}")
    return float(weight)


def _constraint(name: str, metric: str, text: Any) -> Constraint:
    match = _BOUND.fullmatch(text) if isinstance(text, str) else None
    if match is None or not math.isfinite(float(match[2])):
        raise ConfigError(f"{name}: the bound of {metric} must be a string '<= NUMBER' or '>= NUMBER', got {text!r}")
    return Constraint(metric, match[1], float(match[2]))


def _direction(name: str, metric: str, sense: Any) -> str:
    if sense not in ("max", "min"):
        raise ConfigError(f"{name}: {metric} must be 'max' or 'min', got {sense!r}")
    return sense
