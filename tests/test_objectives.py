"""`evonas.objectives.search`: jittable, host and table objectives, and the README's example as written."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from evonas.objectives import search
from evonas.space import Gene, SearchSpace
from evonas.tables import TableError

SPACE = SearchSpace(tuple(Gene(f"g{i}", tuple(range(4))) for i in range(5)))
README = Path(__file__).resolve().parents[1] / "README.md"


def bowl(genomes):
    return -jnp.sum((genomes - 2) ** 2, axis=1).astype(jnp.float32)


def test_jittable_and_host_objectives_give_the_same_search():
    jitted = search(bowl, SPACE, num_evaluations=60, seed=3)
    calls = []

    def on_host(genomes):
        calls.append(len(genomes))
        return -np.sum((genomes - 2) ** 2, axis=1)

    hosted = search(on_host, SPACE, num_evaluations=60, seed=3, on_host=True)
    np.testing.assert_array_equal(jitted.genomes, hosted.genomes)
    np.testing.assert_array_equal(jitted.values, hosted.values)
    assert sum(calls) == 60  # the host function saw each distinct genome once
    assert len({tuple(g) for g in jitted.genomes.tolist()}) == 60
    assert jitted.best_value == jitted.values.max() and jitted.best_choices == SPACE.decode(jitted.best_genome)


def test_several_metrics_need_a_name_or_a_fitness_fn():
    def metrics(genomes):
        return {"accuracy": bowl(genomes), "params": jnp.sum(genomes, axis=1).astype(jnp.float32)}

    with pytest.raises(ValueError, match=r"returns metrics \['accuracy', 'params'\]"):
        search(metrics, SPACE, num_evaluations=10)
    smallest = search(metrics, SPACE, num_evaluations=200, metric="params", strategy="random", population_size=10,
                      num_children_per_generation=10)
    weighted = search(metrics, SPACE, num_evaluations=200, strategy="random", population_size=10,
                      num_children_per_generation=10, fitness_fn=lambda m: m["accuracy"] - 0.1 * m["params"])
    assert smallest.best_value == smallest.values.max() == float(smallest.best_genome.sum())
    assert weighted.best_value == pytest.approx(-float(np.sum((weighted.best_genome - 2) ** 2))
                                                - 0.1 * weighted.best_genome.sum())


def test_diverged_values_are_never_the_best():
    result = search(lambda g: jnp.where(g[:, 0] == 3, jnp.nan, bowl(g)), SPACE, num_evaluations=50,
                    strategy="random", population_size=10, num_children_per_generation=10)
    assert np.isnan(result.values).any() and result.best_genome[0] != 3


def test_table_objective_and_its_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,score\n" + "".join(f"{a},{b},{a * 3 + b}\n" for a in range(3) for b in range(3)))
    result = search(path, metric="score", num_evaluations=9, strategy="random", population_size=3,
                    num_children_per_generation=3)
    assert result.best_value == 8.0 and result.best_choices == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="needs metric"):
        search(path, num_evaluations=5)
    path.write_text("a,b,score\n0,0,1\n1,1,2\n")
    with pytest.raises(TableError, match="is not in the table"):
        search(path, metric="score", num_evaluations=2, strategy="random", population_size=4,
               num_children_per_generation=4)


def test_readme_example_runs_as_written():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    example = next(block for block in blocks if "evonas.objectives" in block)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["result"].best_value is not None


def test_readme_constrained_objective_example_runs_as_written_and_meets_its_constraint():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    first = next(block for block in blocks if "evonas.objectives" in block)
    constrained = next(block for block in blocks if "evonas.fitness" in block)
    namespace = {}
    exec(compile(first + constrained, str(README), "exec"), namespace)  # noqa: S102 - the README's own examples
    best = namespace["result"].best_genome
    assert best[0] <= 2 and best.tolist() == [2, 3, 3, 3, 3]
