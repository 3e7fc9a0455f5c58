"""The `evonas` command. Thin: parsing and printing only; the work lives in `evonas.search`."""

import argparse
import json
import sys
from pathlib import Path

OPTION_TO_FIELD = {  # CLI option -> SearchConfig field
    "seed": "seed", "strategy": "strategy", "population": "population_size", "sample_size": "sample_size",
    "children": "num_children", "batch": "children_per_generation", "steps": "steps",
    "mutation_rate": "mutation_rate", "crossover_rate": "crossover_rate", "members_per_vmap": "members_per_vmap",
}


def _search_parser(subparsers):
    from evonas.search import SearchConfig

    defaults = SearchConfig()
    parser = subparsers.add_parser("search", help="evolve text-classifier architectures on a task")
    parser.add_argument("--out", default="runs/search", help="run directory (default: %(default)s)")
    parser.add_argument("--config", help="JSON file of SearchConfig fields (e.g. a narrower 'space'); options override it")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--strategy", choices=["evolution", "random"], help=f"default {defaults.strategy}")
    parser.add_argument("--population", type=int, help=f"population size P (default {defaults.population_size})")
    parser.add_argument("--sample-size", type=int, help=f"tournament size S (default {defaults.sample_size})")
    parser.add_argument("--children", type=int, help=f"children evaluated in total (default {defaults.num_children})")
    parser.add_argument("--batch", type=int, help="children trained together per generation; 1 is classic regularized "
                        f"evolution (default {defaults.children_per_generation})")
    parser.add_argument("--steps", type=int, help=f"training steps per child (default {defaults.steps})")
    parser.add_argument("--mutation-rate", type=float, help=f"per-gene rate (default {defaults.mutation_rate})")
    parser.add_argument("--crossover-rate", type=float, help=f"default {defaults.crossover_rate}")
    parser.add_argument("--members-per-vmap", type=int, help="members vectorised side by side; raise on GPU/TPU, "
                        f"1 is best on CPU (default {defaults.members_per_vmap})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evonas", description="Evolutionary architecture search for text models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _search_parser(subparsers)
    args = parser.parse_args(argv)
    if args.command == "search":
        return _search(args)
    return 2


def _search(args) -> int:
    from evonas.search import SearchConfig, run_search

    try:
        values = json.loads(Path(args.config).read_text()) if args.config else {}
        values.update({field: getattr(args, option) for option, field in OPTION_TO_FIELD.items()
                       if getattr(args, option) is not None})
        config = SearchConfig.from_dict(values)
    except (ValueError, OSError) as error:
        print(f"evonas search: {error}", file=sys.stderr)
        return 2
    summary = run_search(config, args.out, progress=not args.quiet)
    if summary["best_id"] is None:
        print("every child diverged; no architecture to report", file=sys.stderr)
        return 1
    print(f"best child {summary['best_id']}: validation accuracy {summary['best_val_accuracy']:.4f} "
          f"({summary['best_params']:,} parameters)")
    print(json.dumps(summary["best_architecture"], indent=2))
    print(f"{summary['children']} children in {summary['wall_seconds']:.0f} s, "
          f"{summary['compilations']} compilations; run directory: {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
