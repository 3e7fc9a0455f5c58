"""`evonas report`: one static HTML page about one or several search runs, its figures embedded, readable offline.

For each run: best-so-far curves, every child and its parents, the top genomes (with retrain's test accuracy),
gene frequencies in the living population, accuracy against params with the Pareto front, gene importance and
fitness by choice, and the config and costs. Given several runs, their best-so-far curves overlaid first.
"""

import base64
import html
import json
from pathlib import Path
from typing import Any

from evonas import report_data as data
from evonas import report_figures as figures

TOP_K = 10  # rows of the top-genome table


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Writes the report of `run_dirs` to `out` (default: RUN_DIR/report.html for one run, else ./report.html).

    Raises:
        ReportError: naming a directory that is not a readable search run.
    """
    runs = [data.load_report_run(path) for path in run_dirs]
    path = Path(out) if out is not None else (runs[0].path / "report.html" if len(runs) == 1 else Path("report.html"))
    path.write_text(render(runs))
    return path


def render(runs: list[data.RunData]) -> str:
    """The whole page."""
    body = []
    if len(runs) > 1:
        body += ["<h2>Runs compared</h2>", _figure("overlay", figures.overlay(runs),
                                                  "Best-so-far validation accuracy of every run, by strategy."),
                 _table(["run", *data.run_facts(runs[0])], [[run.name, *data.run_facts(run).values()] for run in runs])]
    for n, run in enumerate(runs):
        body.append(_run_section(run, f"run{n}"))
    title = "evonas report: " + ", ".join(html.escape(run.path.name) for run in runs)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body><h1>{title}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def _run_section(run: data.RunData, anchor: str) -> str:
    result = data.gene_importance(run.space, run.history)
    seconds_note = ("wall seconds are those at the end of each child's generation (generations.jsonl)"
                    if run.generations else "this run has no generations.jsonl, so no wall-time curve")
    top = data.top_children(run, TOP_K)
    rows = [[r["id"], r["generation"], _number(r["val_accuracy"]),
             "—" if r["test_accuracy"] is None else f"{r['test_accuracy'][0]:.4f} ± {r['test_accuracy'][1]:.4f}",
             f"{r['params']:,}", f"{r['flops']:,}", r["architecture"]] for r in top]
    parts = [
        f"<section id='{anchor}'><h2>{html.escape(run.name)}</h2><p>{html.escape(str(run.path.resolve()))}</p>",
        _table(list(data.run_facts(run)), [list(data.run_facts(run).values())]),
        _figure(f"{anchor}-best-so-far", figures.best_so_far(run),
                f"Best-so-far validation accuracy against children evaluated and against wall time; {seconds_note}."),
        _figure(f"{anchor}-children", figures.children(run),
                "Every child in birth order with its fitness, coloured by generation; lines join children to "
                "their parents (the ids are in the history and the table below)."),
        f"<h3>Top {len(top)} distinct genomes</h3>",
        _table(["id", "generation", "val accuracy", "test accuracy (retrain, mean ± std over seeds)", "params",
                "FLOPs", "architecture"], rows),
        _figure(f"{anchor}-gene-frequencies", figures.gene_frequencies(run),
                "Share of each choice of every gene in the living population after each birth."),
        _figure(f"{anchor}-accuracy-params", figures.accuracy_vs_params(run),
                "Validation accuracy against parameters; the Pareto front joins the children no other child beats "
                "with fewer or as many parameters."),
        _figure(f"{anchor}-importance", figures.importance(run, result),
                "Which genes explain fitness: permutation importance of each gene for a random forest fitted to "
                "predict fitness from the genome, measured on held-out children (4-fold cross-validation)."),
        _figure(f"{anchor}-fitness-by-choice", figures.fitness_by_choice(run, result),
                "Fitness of the children that took each choice of the most important genes (black: median)."),
        "<h3>Config</h3>", f"<pre>{html.escape(json.dumps(run.config, indent=2))}</pre></section>",
    ]
    return "\n".join(parts)


def _figure(figure_id: str, png: bytes, caption: str) -> str:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f"<figure id='{figure_id}'><img src='{source}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return _number(value) if isinstance(value, float) else str(value)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; } th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""
