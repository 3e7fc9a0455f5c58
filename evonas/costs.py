"""What a child costs, besides its accuracy: parameters, forward FLOPs, and measured inference latency.

Parameters and FLOPs come from the cost model of `evonas.models` (no compile). Latency is measured: the
exact-size standalone `TextClassifier` of the genome, freshly initialized, compiled for one batch size on the
host CPU, called `LATENCY_WARMUP` times untimed, then `LATENCY_REPEATS` times, each call timed to its
`block_until_ready`; the metric is the median, in milliseconds. Each batch size costs a compile, so a search
measures only the latencies its objective, constraints or Pareto objectives name (`Objective.latency_batch_sizes`).
Latency depends on the machine and its load, so a search that uses it is repeatable only up to that noise; its
values are recorded in history.jsonl, and a resumed search reads them back rather than measuring again.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from evonas.models import Architecture, TextClassifier, forward_flops, param_count
from evonas.supernet import PopulationModel

LATENCY_WARMUP = 3  # untimed calls after the compile: caches, thread pools and allocations settle
LATENCY_REPEATS = 21  # timed calls; the median of an odd count is one of them


def child_costs(model: PopulationModel, arch: Architecture, latency_batch_sizes: dict[str, int]) -> dict[str, float]:
    """`params`, `flops` (one sequence of `model.max_length` tokens) and the latencies asked for, by metric name."""
    costs = {"params": param_count(arch, model.vocab_size, model.max_length, model.num_classes),
             "flops": forward_flops(arch, model.max_length, model.num_classes)}
    for name, batch_size in latency_batch_sizes.items():
        costs[name] = latency_ms(model.standalone(arch), batch_size)
    return costs


def latency_ms(classifier: TextClassifier, batch_size: int, repeats: int = LATENCY_REPEATS,
               warmup: int = LATENCY_WARMUP) -> float:
    """Median wall milliseconds of one inference call of `classifier` on `batch_size` full-length rows, host CPU."""
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        tokens = jax.random.randint(jax.random.key(0), (batch_size, classifier.max_length), 2,
                                    classifier.vocab_size, jnp.int32)
        mask = jnp.ones(tokens.shape, bool)
        params = jax.jit(classifier.init)(jax.random.key(0), tokens[:1], mask[:1])["params"]
        forward = jax.jit(lambda p, t, m: classifier.apply({"params": p}, t, m)).lower(params, tokens, mask).compile()
        for _ in range(warmup):
            forward(params, tokens, mask).block_until_ready()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(params, tokens, mask).block_until_ready()
            seconds.append(time.perf_counter() - start)
    return float(np.float32(1e3 * statistics.median(seconds)))
