"""Steady-state train steps per second under whatever allocator this process runs with.

Command (compare two allocator settings of the same step; run each several times, alternating):
    python experiments/allocator_step.py population --steps-per-call 10 --calls 4
    EVONAS_MALLOPT=0 python experiments/allocator_step.py population   # glibc's defaults
    python experiments/allocator_step.py model --width 128 --blocks 3  # one jitted step per call

`population` trains 4 mid-size genomes with `Population.train`; `model` trains one exact-size
attention + gated-MLP model with one jitted step per call, the case the allocator matters most
for. Prints one JSON line: the allocator evonas reports and member-steps per second after
compilation (the first call is not counted). Set JAX_COMPILATION_CACHE_DIR to reuse compilations.
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
from bench_population import CLIP_NORM, MID_SPACE, BenchConfig, distinct_genomes, make_train_step

import evonas
from evonas.data import listops_task
from evonas.member import Split, TrainConfig
from evonas.models import Architecture, BlockConfig, TextClassifier
from evonas.optimizers import make_optimizer
from evonas.population import Population
from evonas.supernet import PopulationModel


def population_rate(task, train: Split, steps_per_call: int, calls: int) -> float:
    config = BenchConfig("mid", 4, steps_per_call * calls, steps_per_call, 32, MID_SPACE, min_blocks=2)
    genomes = jnp.asarray(distinct_genomes(config.space(), jax.random.key(0), config.population_size))
    model = PopulationModel(config.space(), task.vocab_size, task.max_length, task.num_classes)
    population = Population(model, TrainConfig(batch_size=32, steps_per_call=steps_per_call))
    states = population.init(jax.random.split(jax.random.key(1), len(genomes)), genomes)
    seconds = []
    for call in range(calls):
        start = time.perf_counter()
        states, losses = population.train(states, genomes, train, jax.random.key(2), jnp.int32(call * steps_per_call))
        losses.block_until_ready()
        seconds.append(time.perf_counter() - start)
    return len(genomes) * steps_per_call * (calls - 1) / sum(seconds[1:])


def model_rate(task, train: Split, width: int, blocks: int, steps: int) -> float:
    layers = tuple(BlockConfig(op, "gelu", "layernorm") for op in ("attention", "gated_mlp") * blocks)[:blocks]
    arch = Architecture(layers, width, 4, 2, 0.1, "learned", "mean", 1e-3, 0.0, "adamw")
    module = TextClassifier(arch, task.vocab_size, task.max_length, task.num_classes)
    params = module.init(jax.random.key(1), train.tokens[:1], train.tokens[:1] != 0)["params"]
    optimizer = make_optimizer(arch.optimizer, arch.learning_rate, arch.weight_decay, CLIP_NORM)
    opt_state = optimizer.init(params)
    step_fn = jax.jit(make_train_step(module, optimizer, 32), donate_argnums=(0, 1))
    key_data, key_dropout = jax.random.split(jax.random.key(2))
    params, opt_state, loss = step_fn(params, opt_state, train.tokens, train.labels, key_data, key_dropout, 0)
    loss.block_until_ready()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        params, opt_state, loss = step_fn(params, opt_state, train.tokens, train.labels, key_data, key_dropout, step)
    loss.block_until_ready()
    return steps / (time.perf_counter() - start)


def main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("population", "model"))
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    task = listops_task(seed=0)
    train = Split(jnp.asarray(task.train.tokens), jnp.asarray(task.train.labels))
    if args.what == "population":
        rate = population_rate(task, train, args.steps_per_call, args.calls)
    else:
        rate = model_rate(task, train, args.width, args.blocks, args.steps)
    print(json.dumps({"what": args.what, "allocator": evonas.ALLOCATOR, "member_steps_per_second": rate, **vars(args)}))


if __name__ == "__main__":
    main(sys.argv[1:])
