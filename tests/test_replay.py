"""Tables as objectives and replicated searches: `evonas.tables`, `evonas.replay` and `evonas replay`."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import load_experiment

from evonas import strategies
from evonas.cli import main
from evonas.replay import make_search, replay
from evonas.space import Gene, SearchSpace
from evonas.tables import TableError, load_table

synthetic_tables = load_experiment("synthetic_tables")


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def smooth_table(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("tables") / "smooth.csv"
    return path, synthetic_tables.write_table(path, "smooth")


def test_table_space_comes_from_each_columns_distinct_values(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["op,width,acc,params", "conv,64,0.5,10", "attn,32,0.7,20", "conv,32,0.6,5",
                                          "attn,64,0.9,40"])
    table = load_table(path, ["acc", "params"], ["width", "op"])
    assert table.space == SearchSpace((Gene("width", (32, 64)), Gene("op", ("attn", "conv"))))
    np.testing.assert_array_equal(table.evaluate("acc", [[1, 1], [0, 0], [1, 0]]), np.float32([0.5, 0.7, 0.9]))
    np.testing.assert_array_equal(table.evaluate("params", [[0, 1]]), [5.0])
    assert load_table(path, ["acc"], None).space.names == ("op", "width", "params")


def test_synthetic_table_reads_back_with_its_planted_optimum(smooth_table):
    path, target = smooth_table
    table = load_table(path, ["score"])
    assert len(table.genomes) == 15625 and table.space.names == tuple(f"g{i}" for i in range(6))
    scores = table.column("score")
    np.testing.assert_array_equal(table.genomes[np.argmax(scores)], target)
    assert np.sum(scores == scores.max()) == 1


def test_genome_not_in_the_table_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "sparse.csv", ["a,b,score", "0,0,1", "1,1,2"])
    table = load_table(path, ["score"])
    with pytest.raises(TableError, match=r"genome \[0, 1\] \(\{'a': 0, 'b': 1\}\) is not in the table"):
        table.evaluate("score", [[0, 0], [0, 1]])


@pytest.mark.parametrize("lines, metric, genes, message", [
    (["a,score", "0,1", "0,2"], "score", None, "line 3 repeats the genes of line 2"),
    (["a,score", "0,1", "1,high"], "score", None, r"line 3, column 'score': 'high' is not a number"),
    (["a,score", "0,1"], "accuracy", None, r"no column 'accuracy'; columns are \['a', 'score'\]"),
    (["a,score", "0,1"], "score", ["b"], "no column 'b'"),
    (["a,score", "0,1,2"], "score", None, "line 2 has 3 cells, the header has 2"),
    (["a,score"], "score", None, "expected a header line and at least one row"),
])
def test_bad_tables_name_the_file_and_the_fault(tmp_path, lines, metric, genes, message):
    path = write_csv(tmp_path / "bad.csv", lines)
    with pytest.raises(TableError, match=message) as error:
        load_table(path, [metric], genes)
    assert str(path) in str(error.value)


def python_replay(strategy, table, key, num_evaluations, max_generations):
    """An independent reference: the same search driven from Python, with a dict as its memory."""
    read, state, step = {}, strategy.init(), 0
    while len(read) < num_evaluations and step < max_generations:
        children, _ = strategy.ask(jax.random.fold_in(key, step), state)
        values = []
        for genome in np.asarray(children):
            code = tuple(genome.tolist())
            if code not in read and len(read) < num_evaluations:
                read[code] = float(table.evaluate("score", genome[None])[0])
            values.append(read.get(code, float(table.evaluate("score", genome[None])[0])))
        state = strategy.tell(state, children, np.float32(values))
        step += 1
    return max(read.values()), len(read), step


@pytest.mark.parametrize("name, settings", [
    ("evolution", {"population_size": 6, "sample_size": 2, "num_children_per_generation": 3}),
    ("ga", {"num_children_per_generation": 4}),  # CMA-ES: batched eigh rounds differently, so not bit for bit
])
def test_replay_matches_a_python_loop_seed_by_seed(smooth_table, name, settings):
    table = load_table(smooth_table[0], ["score"])
    strategy = strategies.make(name, table.space, **settings)
    result = replay(strategy, table.lookup("score"), num_evaluations=20, num_seeds=3, seed=5, max_generations=40)
    keys = jax.random.split(jax.random.key(5), 3)
    for seed in range(3):
        best, num_read, steps = python_replay(strategy, table, keys[seed], 20, 40)
        assert (result["best"][seed], result["num_read"][seed], result["generations"][seed]) == (
            np.float32(best), num_read, steps)


def test_asking_a_genome_again_costs_no_budget(tmp_path):
    # 8 genomes, random search asks 6 per generation: repeats are certain, yet each search reads 8 distinct ones.
    path = write_csv(tmp_path / "tiny.csv", ["a,b,c,score"] + [f"{a},{b},{c},{4 * a + 2 * b + c}"
                                                                 for a in range(2) for b in range(2) for c in range(2)])
    table = load_table(path, ["score"])
    strategy = strategies.make("random", table.space, population_size=6, num_children_per_generation=6)
    result = replay(strategy, table.lookup("score"), num_evaluations=8, num_seeds=50, max_generations=100)
    np.testing.assert_array_equal(result["num_read"], 8)
    np.testing.assert_array_equal(result["best"], 7.0)  # having read all 8, every search found the maximum
    assert result["generations"].max() > 2  # two generations would do if nothing repeated
    memory, _ = jax.jit(make_search(strategy, table.lookup("score"), 8, 100))(jax.random.key(0))
    assert sorted(map(tuple, memory.genomes.tolist())) == [(a, b, c) for a in range(2) for b in range(2) for c in range(2)]


def test_replay_on_a_table_without_every_combination_is_a_clear_error(tmp_path, capsys):
    path = write_csv(tmp_path / "sparse.csv", ["a,b,score", "0,0,1", "1,1,2", "0,1,3"])
    argv = ["replay", "--table", str(path), "--metric", "score", "--evaluations", "3", "--seeds", "20",
            "--strategy", "random", "--out", str(tmp_path / "r.json")]
    assert main(argv) == 2
    assert "the search asked for genome {'a': 1, 'b': 0}, which is not in the table" in capsys.readouterr().err


def test_replay_command_writes_the_results(smooth_table, tmp_path):
    out = tmp_path / "replay.json"
    argv = ["replay", "--table", str(smooth_table[0]), "--metric", "score", "--evaluations", "50", "--seeds", "200",
            "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert {"best", "best_mean", "best_std", "table_max", "found_max_share", "evaluations", "seeds", "strategy",
            "settings", "seconds"} <= set(result)
    assert len(result["best"]) == 200 and result["evaluations"] == 50 and result["strategy"] == "evolution"
    assert result["table_max"] == pytest.approx(0.9) and max(result["best"]) <= result["table_max"]
    assert result["found_max_share"] == np.mean(np.float32(result["best"]) == np.float32(result["table_max"]))
    assert result["settings"]["population_size"] == 20


@pytest.mark.parametrize("extra, message", [
    (["--metric", "accuracy"], "no column 'accuracy'"),
    (["--metric", "score", "--strategy", "ga", "--sample-size", "3"], "strategy 'ga' takes no sample_size"),
    (["--metric", "score", "--genes", "g0,g9"], "no column 'g9'"),
])
def test_replay_bad_input_is_one_line_and_exit_2(smooth_table, tmp_path, capsys, extra, message):
    argv = ["replay", "--table", str(smooth_table[0]), "--evaluations", "10", "--seeds", "2",
            "--out", str(tmp_path / "r.json"), *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("evonas replay: ") and message in error and error.count("\n") == 1
