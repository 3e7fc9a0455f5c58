"""CPU proxy of the accelerator path: what one population train step executes against what its members need.

Command:
    python experiments/population_proxy.py --out experiments/results/population_proxy.json   # ~5 min on 2 cores

No accelerator is attached to CI, so the population forms get properties that hold on any backend and can
be measured on a CPU. For the mid set of `bench_population.py` (distinct genomes of its mid space, batch 32,
ListOps length 64), on one device, per population form (`member`: one member after another, each running
only its own branches; `grouped`: every member side by side, routed by op, the accelerator path):

  executed_over_useful   matmul FLOPs that one train step's loss and gradients execute (every branch a
                         batched switch computes, recomputation included; `executed_flops.py`), over the
                         FLOPs the members' exact-size models need (3 x forward).
  ops_per_member_step    primitive operations that step executes, loops unrolled, per member: on an
                         accelerator each is a kernel launch, shared by the members it serves.
  hlo_ops                instructions of the optimised, compiled train program (`steps_per_call` steps),
                         and compile_seconds, its lowering and compilation on one CPU device.

The figures at P = 32 are the issue's; P = 256 shows what grows with the population (grouped tiles grow
with it: `grouped.default_tile_sizes`). The step cost is counted only at the sizes `--count` names (default 32):
the jaxpr walk holds zeros of every intermediate array, which for the grouped form at P = 256 took more than the
24 GB of this machine. Compilation is measured at every size.
"""

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from executed_flops import population_step_cost
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from evonas import sharding
from evonas.data import listops_task
from evonas.member import Split, TrainConfig
from evonas.models import Architecture, forward_flops
from evonas.population import Population
from evonas.supernet import PopulationModel

BATCH_SIZE, STEPS_PER_CALL = 32, 10


def mid_population(num: int, form: str) -> tuple[Population, np.ndarray, Any]:
    """The benchmark's mid set: `num` distinct genomes, and a Population of `form` on one device."""
    import bench_population  # sibling script; imported late so that `--help` stays fast

    config = next(c for c in bench_population.get_configs() if c.name == "mid")
    task = listops_task(seed=0)
    space = config.space()
    genomes = bench_population.distinct_genomes(space, jax.random.key(bench_population.GENOME_SEED), num)
    model = PopulationModel(space, task.vocab_size, task.max_length, task.num_classes)
    mesh = Mesh(np.array(jax.devices()[:1]), (sharding.MEMBERS,))
    population = Population(model, TrainConfig(batch_size=BATCH_SIZE, steps_per_call=STEPS_PER_CALL, form=form), mesh)
    return population, genomes, task


def useful_flops(population: Population, genomes: np.ndarray) -> float:
    """What the members' exact-size models need for one train step: 3 x their forward matmul FLOPs."""
    model = population.model
    return float(sum(3 * BATCH_SIZE * forward_flops(Architecture.from_genome(model.space, g), model.max_length,
                                                    model.num_classes) for g in genomes))


def step_cost(num: int, form: str) -> dict[str, float]:
    """executed/useful FLOPs and executed primitive ops per member-step of one train step's loss and gradients."""
    population, genomes, task = mid_population(num, form)
    start = time.perf_counter()
    cost = population_step_cost(population, genomes, BATCH_SIZE, task.max_length)
    return {"executed_over_useful": cost.flops / useful_flops(population, genomes),
            "ops_per_member_step": cost.ops / num, "counted_seconds": time.perf_counter() - start}


def train_compile(num: int, form: str) -> dict[str, float]:
    """Lowers and compiles the train program for `num` members on one device; its HLO instruction count."""
    population, genomes, task = mid_population(num, form)
    train = population.put_split(Split(task.train.tokens, task.train.labels))
    states = population.state_shapes(num, NamedSharding(population.mesh, P(sharding.MEMBERS)))
    routes = population.distribute(population.routes(genomes))
    start = time.perf_counter()
    compiled = population.programs["train"].lower(states, population.distribute(genomes), train,
                                                  population.replicate(jax.random.key(0)),
                                                  population.replicate(jnp.int32(0)), routes,
                                                  population.distribute(np.ones(num, bool))).compile()
    seconds = time.perf_counter() - start
    instructions = sum(1 for line in compiled.as_text().splitlines() if re.match(r"\s*(ROOT )?%\S+ = ", line))
    return {"compile_seconds": seconds, "hlo_ops": instructions}


def run(populations: Sequence[int], forms: Sequence[str], count: Sequence[int] = (32,), log=print) -> dict[str, Any]:
    rows = []
    for num in populations:
        for form in forms:
            row = {"population": num, "form": form, **(step_cost(num, form) if num in count else {}),
                   **train_compile(num, form)}
            log(format_row(row))
            rows.append(row)
    return {"rows": rows, "batch_size": BATCH_SIZE, "steps_per_call": STEPS_PER_CALL, "length": 64,
            "jax": jax.__version__, "backend": jax.default_backend()}


def format_row(row: dict[str, Any]) -> str:
    counted = (f"executed/useful {row['executed_over_useful']:6.3f}  ops/member-step {row['ops_per_member_step']:7.0f}"
               if "executed_over_useful" in row else f"{'(step cost not counted)':<46}")
    return (f"P={row['population']:>4} {row['form']:<8} {counted}  train HLO ops {row['hlo_ops']:6d}  "
            f"compile {row['compile_seconds']:5.1f} s")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--populations", default="32,256", help="comma-separated population sizes")
    parser.add_argument("--forms", default="member,grouped", help="comma-separated population forms")
    parser.add_argument("--count", default="32", help="comma-separated population sizes whose step cost is counted")
    args = parser.parse_args(argv)
    results = run([int(p) for p in args.populations.split(",")], args.forms.split(","),
                  [int(p) for p in args.count.split(",")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
