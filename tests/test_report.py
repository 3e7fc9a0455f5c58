"""`evonas report`: the page of a real small run holds every figure, two runs overlay, a browser renders it."""

import base64
import dataclasses
import html
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from helpers import SMALL_SPACE
from matplotlib import image

from evonas import report_data as data
from evonas.cli import main
from evonas.retrain import retrain
from evonas.search import SearchConfig, run_search
from evonas.space import Gene, SearchSpace

CONFIG = SearchConfig(num_children=16, children_per_generation=4, population_size=8, sample_size=2, steps=10,
                      steps_per_call=5, space=SMALL_SPACE)
RUN_FIGURES = ("best-so-far", "children", "gene-frequencies", "accuracy-params", "importance", "fitness-by-choice")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evolution")
    run_search(CONFIG, out, progress=False)
    retrain(out, top_k=2, num_seeds=2, steps=5, progress=False)
    return out


@pytest.fixture(scope="module")
def page(run_dir):
    assert main(["report", str(run_dir)]) == 0
    return (run_dir / "report.html").read_text()


def figures(page):
    """{figure id: decoded PNG image} of every figure in the page."""
    found = re.findall(r"<figure id='([\w-]+)'><img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    return {name: image.imread(io.BytesIO(base64.b64decode(png)), format="png") for name, png in found}


def test_page_of_a_real_run_holds_every_figure_drawn(page):
    found = figures(page)
    assert sorted(found) == sorted(f"run0-{name}" for name in RUN_FIGURES)
    for name, pixels in found.items():
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300, name
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"
    assert "<script" not in page and "http" not in page.split("<pre>")[0], "the page needs nothing from a network"


def test_page_shows_top_genomes_with_their_retrained_test_accuracy_and_costs(run_dir, page):
    results = json.loads((run_dir / "retrain" / "results.json").read_text())
    for genome in results["genomes"]:
        assert f"{genome['test_accuracy_mean']:.4f} ± {genome['test_accuracy_std']:.4f}" in page
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"<td>{summary['compilations']}</td>" in page and f"{summary['wall_seconds']:.4f}" in page
    assert '"population_size": 8' in html.unescape(page), "the config"


def test_two_runs_overlay_their_best_so_far_curves(run_dir, tmp_path):
    random_run = tmp_path / "random"
    run_search(dataclasses.replace(CONFIG, strategy="random", seed=1), random_run, progress=False)
    out = tmp_path / "both.html"
    assert main(["report", str(run_dir), str(random_run), "--out", str(out)]) == 0
    found = figures(out.read_text())
    assert sorted(found) == sorted(["overlay", *(f"run{n}-{name}" for n in (0, 1) for name in RUN_FIGURES)])
    assert found["overlay"][..., :3].std() > 0.05


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium) to render the page")
def test_headless_chromium_renders_the_page_with_its_figures(page, run_dir, tmp_path):
    screenshot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={screenshot}",
                    "--window-size=1280,3000", (run_dir / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = image.imread(screenshot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.3  # text and tables are grey; plotted data is not
    assert coloured.sum() > 5000, "no figure was drawn in the browser"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is not a directory"),
    (lambda tmp: tmp, "is not a search run directory: it has no config.json or history.jsonl"),
])
def test_bad_run_directory_is_a_one_line_error(tmp_path, capsys, make, message):
    assert main(["report", str(make(tmp_path))]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_damaged_history_is_a_one_line_error(run_dir, tmp_path, capsys):
    for name in ("config.json", "history.jsonl"):
        shutil.copy(run_dir / name, tmp_path / name)
    (tmp_path / "history.jsonl").write_text('{"id": 0, "genome": [0\n')
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "is not what `evonas search` writes" in error and error.count("\n") == 1


def record(i, genome, fitness, diverged=False):
    return {"id": i, "generation": i, "genome": list(genome), "parents": [], "fitness": None if diverged else fitness,
            "val_accuracy": None if diverged else fitness, "params": 100 + i, "flops": 1000, "diverged": diverged}


def test_best_so_far_follows_the_fittest_child_and_skips_diverged():
    history = [record(0, [0], 0.0, diverged=True), record(1, [0], 0.3), record(2, [0], 0.2), record(3, [0], 0.5)]
    np.testing.assert_array_equal(data.best_so_far(history), [np.nan, 0.3, 0.3, 0.5])


def test_gene_frequencies_count_the_last_population_size_children():
    space = SearchSpace((Gene("a", (0, 1, 2)), Gene("b", ("x", "y"))))
    genomes = np.random.default_rng(0).integers(0, 2, (11, 2))
    history = [record(i, g, 0.1) for i, g in enumerate(genomes)]
    shares = data.gene_frequencies(space, history, population_size=4)
    for i in range(11):
        living = genomes[max(0, i - 3):i + 1]
        for g, gene in enumerate(space.genes):
            expected = [np.mean(living[:, g] == c) for c in range(len(gene.choices))]
            np.testing.assert_allclose(shares[g][i], expected)


def test_pareto_front_is_every_point_no_other_dominates():
    rng = np.random.default_rng(1)
    params, accuracy = rng.integers(1, 20, 60).astype(float), rng.random(60).round(1)
    accuracy[3] = np.nan
    front = set(data.pareto_front(params, accuracy).tolist())
    for i in range(60):
        dominated = any(params[j] <= params[i] and accuracy[j] >= accuracy[i]
                        and (params[j] < params[i] or accuracy[j] > accuracy[i]) for j in range(60))
        assert (i in front) == (np.isfinite(accuracy[i]) and not dominated), i


def test_importance_finds_the_gene_that_decides_fitness():
    space = SearchSpace(tuple(Gene(f"g{k}", (0, 1, 2)) for k in range(5)))
    rng = np.random.default_rng(0)
    genomes = rng.integers(0, 3, (60, 5))
    history = [record(i, g, 0.2 * g[2] + 0.01 * rng.random()) for i, g in enumerate(genomes)]
    result = data.gene_importance(space, history)
    assert result.names[int(np.argmax(result.mean))] == "g2"
    assert result.mean[2] > 0.5 and np.delete(result.mean, 2).max() < 0.1 and result.held_out_r2 > 0.8
    assert data.gene_importance(space, history[:5]) is None, "too few children"


def test_fitness_by_choice_groups_children_by_their_option():
    space = SearchSpace((Gene("op", ("conv", "gru")),))
    history = [record(0, [0], 0.1), record(1, [1], 0.4), record(2, [0], 0.3), record(3, [1], 0.0, diverged=True)]
    by_choice = data.fitness_by_choice(space, history, "op")
    assert list(by_choice) == ["conv", "gru"]
    np.testing.assert_allclose(by_choice["conv"], [0.1, 0.3])
    np.testing.assert_allclose(by_choice["gru"], [0.4])
