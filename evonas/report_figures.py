"""The figures of `evonas report`, drawn with matplotlib and returned as PNG bytes for embedding in the page."""

import io
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure  # without pyplot: no display, no global figure state

from evonas import report_data as data

DPI = 100
TOP_GENES = 3  # genes of highest importance whose fitness by choice is shown


def png(fig) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def best_so_far(run: data.RunData) -> bytes:
    """Best-so-far validation accuracy against children evaluated, and against wall seconds."""
    curve, seconds = data.best_so_far(run.history), data.child_seconds(run)
    fig = Figure(figsize=(10, 3.5))
    axes = fig.subplots(1, 2, sharey=True)
    axes[0].step(np.arange(1, len(curve) + 1), curve, where="post")
    axes[0].set(xlabel="children evaluated", ylabel="best-so-far validation accuracy")
    if seconds is None:
        axes[1].text(0.5, 0.5, "no generations.jsonl:\nthe run predates per-generation times", ha="center",
                     va="center", transform=axes[1].transAxes)
    else:
        axes[1].step(seconds, curve, where="post")
    axes[1].set(xlabel="wall seconds (end of each child's generation)")
    for ax in axes:
        ax.grid(alpha=0.3)
    return png(fig)


def children(run: data.RunData) -> bytes:
    """Every child at (birth order, fitness), coloured by generation, with a line to each parent."""
    fitness = data.fitness_array(run.history)
    generation = np.asarray([r["generation"] for r in run.history])
    ids = {r["id"]: i for i, r in enumerate(run.history)}
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for i, record in enumerate(run.history):
        for parent in record["parents"]:
            j = ids.get(parent)
            if j is not None and np.isfinite(fitness[i]) and np.isfinite(fitness[j]):
                ax.plot([j, i], [fitness[j], fitness[i]], color="0.6", lw=0.5, alpha=0.5, zorder=1)
    finite = np.isfinite(fitness)
    points = ax.scatter(np.flatnonzero(finite), fitness[finite], c=generation[finite], cmap="viridis", s=18,
                        zorder=2)
    fig.colorbar(points, ax=ax, label="generation")
    if (~finite).any():
        ax.scatter(np.flatnonzero(~finite), np.full((~finite).sum(), np.nanmin(fitness) if finite.any() else 0),
                   marker="x", color="red", label="diverged", zorder=3)
        ax.legend()
    ax.set(xlabel="child (birth order)", ylabel="fitness (validation accuracy)",
           title="grey lines join each child to its parents")
    ax.grid(alpha=0.3)
    return png(fig)


def gene_frequencies(run: data.RunData) -> bytes:
    """One panel per gene: the share of each choice in the living population after each birth."""
    population_size = int(run.config.get("population_size", len(run.history)))
    shares = data.gene_frequencies(run.space, run.history, population_size)
    columns = 4
    rows = -(-len(shares) // columns)
    fig = Figure(figsize=(12, 2.2 * rows))
    axes = fig.subplots(rows, columns, sharex=True, squeeze=False)
    x = np.arange(1, len(run.history) + 1)
    for ax, gene, share in zip(axes.flat, run.space.genes, shares):
        ax.stackplot(x, share.T, labels=[str(c) for c in gene.choices])
        ax.set_title(gene.name, fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)
    for ax in list(axes.flat)[len(shares):]:
        ax.axis("off")
    fig.supxlabel(f"children evaluated (living population: the last {population_size})")
    fig.tight_layout()
    return png(fig)


def accuracy_vs_params(run: data.RunData) -> bytes:
    """Validation accuracy against parameters, the Pareto front (fewer params, higher accuracy) drawn through."""
    params = np.asarray([r["params"] for r in run.history], float)
    accuracy = data.fitness_array(run.history)
    front = data.pareto_front(params, accuracy)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.scatter(params, accuracy, s=14, alpha=0.6, label="child")
    ax.step(params[front], accuracy[front], where="post", color="C3", marker="o", label="Pareto front")
    ax.set(xscale="log", xlabel="parameters", ylabel="validation accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    return png(fig)


def importance(run: data.RunData, result: data.Importance | None) -> bytes:
    """Each gene's permutation importance (mean ± std of the held-out R² drop), most important on top."""
    fig = Figure(figsize=(7, 0.28 * run.space.num_genes + 1.2))
    ax = fig.subplots()
    if result is None:
        ax.text(0.5, 0.5, f"fewer than {data.MIN_CHILDREN_FOR_IMPORTANCE} children that did not diverge",
                ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return png(fig)
    order = np.argsort(result.mean)
    ax.barh(np.asarray(result.names)[order], result.mean[order], xerr=result.std[order], color="C0")
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="drop in held-out R² when the gene is shuffled",
           title=f"random forest on the genome; held-out R² = {result.held_out_r2:.2f}")
    ax.tick_params(axis="y", labelsize=8)
    return png(fig)


def fitness_by_choice(run: data.RunData, result: data.Importance | None) -> bytes:
    """For the most important genes, the fitness of the children that took each choice."""
    genes = [result.names[i] for i in np.argsort(-result.mean)[:TOP_GENES]] if result else run.space.names[:TOP_GENES]
    fig = Figure(figsize=(4 * len(genes), 3.5))
    axes = fig.subplots(1, len(genes), squeeze=False)
    for ax, gene in zip(axes.flat, genes):
        by_choice = data.fitness_by_choice(run.space, run.history, gene)
        labels = list(by_choice)
        for k, values in enumerate(by_choice.values()):
            jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(values))
            ax.scatter(k + jitter, values, s=10, alpha=0.6)
            if len(values):
                ax.hlines(np.median(values), k - 0.3, k + 0.3, color="black")
        ax.set_xticks(range(len(labels)), [f"{label}\n(n={len(v)})" for label, v in by_choice.items()], fontsize=8)
        ax.set(title=gene, ylabel="fitness")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return png(fig)


def overlay(runs: list[data.RunData]) -> bytes:
    """Best-so-far curves of several runs, by strategy: each run thin, the mean bold, ± one std as a band."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.config.get("strategy", "?")].append(data.best_so_far(run.history))
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for color, (strategy, curves) in enumerate(sorted(groups.items())):
        length = min(len(c) for c in curves)  # runs of a strategy are compared over the children all have
        stacked = np.vstack([c[:length] for c in curves])
        x = np.arange(1, length + 1)
        for curve in stacked:
            ax.plot(x, curve, color=f"C{color}", lw=0.6, alpha=0.4, drawstyle="steps-post")
        mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
        ax.plot(x, mean, color=f"C{color}", lw=2, drawstyle="steps-post",
                label=f"{strategy}: mean of {len(curves)} run{'s' if len(curves) > 1 else ''}")
        ax.fill_between(x, mean - std, mean + std, color=f"C{color}", alpha=0.2, step="post")
    ax.set(xlabel="children evaluated", ylabel="best-so-far validation accuracy", title="band: mean ± one std")
    ax.legend()
    ax.grid(alpha=0.3)
    return png(fig)
