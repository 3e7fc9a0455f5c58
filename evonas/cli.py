"""The `evonas` command. Thin: parsing and printing only; the work lives in `evonas.search`."""

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from evonas import replay

OPTION_TO_FIELD = {  # CLI option -> SearchConfig field
    "seed": "seed", "strategy": "strategy", "population": "population_size", "sample_size": "sample_size",
    "children": "num_children", "batch": "children_per_generation", "steps": "steps",
    "mutation_rate": "mutation_rate", "crossover_rate": "crossover_rate", "population_form": "population_form",
    "compute_dtype": "compute_dtype",
    "memory_budget_gb": "memory_budget_gb",
    "dataset": "dataset", "data_dir": "data_dir", "text_feature": "text_feature", "label_feature": "label_feature",
    "tokenizer": "tokenizer", "vocab_size": "vocab_size", "min_frequency": "min_frequency",
    "max_length": "max_length", "length_percentile": "length_percentile", "lowercase": "lowercase",
}


def _search_parser(subparsers):
    from evonas.search import SearchConfig
    from evonas.strategies import STRATEGIES

    defaults = SearchConfig()
    parser = subparsers.add_parser("search", help="evolve text-classifier architectures on a task")
    run_dir = parser.add_mutually_exclusive_group()
    run_dir.add_argument("--out", default="runs/search", help="run directory (default: %(default)s)")
    run_dir.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR from its last checkpoint, "
                         "with the config it was started with")
    parser.add_argument("--config", help="JSON file of SearchConfig fields (e.g. a narrower 'space'); options override it")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--strategy", choices=list(STRATEGIES), help="aging evolution, random search, or evosax's "
                        f"genetic algorithm (ga) or CMA-ES (cma_es) (default {defaults.strategy})")
    parser.add_argument("--population", type=int, help=f"population size P (default {defaults.population_size})")
    parser.add_argument("--sample-size", type=int, help=f"tournament size S (default {defaults.sample_size})")
    parser.add_argument("--children", type=int, help=f"children evaluated in total (default {defaults.num_children})")
    parser.add_argument("--batch", type=int, help="children trained together per generation; 1 is classic regularized "
                        f"evolution (default {defaults.children_per_generation})")
    parser.add_argument("--steps", type=int, help=f"training steps per child (default {defaults.steps})")
    parser.add_argument("--mutation-rate", type=float, help=f"per-gene rate (default {defaults.mutation_rate})")
    parser.add_argument("--crossover-rate", type=float, help=f"default {defaults.crossover_rate}")
    parser.add_argument("--population-form", choices=["auto", "member", "grouped"], help="how a generation's "
                        "members share the devices: 'member', one after another (best on CPUs); 'grouped', side by "
                        "side, grouped by the op each block runs (GPUs, TPUs); 'auto' picks by platform (default "
                        f"{defaults.population_form})")
    parser.add_argument("--compute-dtype", choices=["float32", "bfloat16"], help="dtype of the forward and backward "
                        "passes; bfloat16 is for GPUs and TPUs, weights and optimizer stay float32 (default "
                        f"{defaults.compute_dtype})")
    parser.add_argument("--memory-budget-gb", type=float, help="memory for the members trained at once; more "
                        "members are trained in chunks (default: half the RAM, or of the devices' memory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    hosts = parser.add_argument_group("several hosts", "one search over the devices of several processes, through "
                                      "jax.distributed; every process runs the same command and writes its own --out")
    hosts.add_argument("--distributed", action="store_true", help="join the processes jax.distributed.initialize "
                       "finds by itself (TPU pods, SLURM, Open MPI), or those given below")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
    hosts.add_argument("--num-processes", type=int, help="processes in the search")
    hosts.add_argument("--process-id", type=int, help="this process' index, 0 to num-processes - 1")
    text = parser.add_argument_group("real text", "a prepared tensorflow-datasets dataset instead of ListOps")
    text.add_argument("--dataset", help="TFDS name, e.g. glue/sst2, or the name given to `evonas data import`")
    text.add_argument("--data-dir", help="where the dataset is prepared (default: tensorflow-datasets' default)")
    text.add_argument("--text-feature", help="text feature (default: found from the dataset's metadata)")
    text.add_argument("--label-feature", help="ClassLabel feature (default: found from the dataset's metadata)")
    text.add_argument("--tokenizer", choices=["word", "byte"], help=f"default {defaults.tokenizer}")
    text.add_argument("--vocab-size", type=int, help=f"word ids at most (default {defaults.vocab_size})")
    text.add_argument("--min-frequency", type=int, help=f"rarer training words are <unk> (default {defaults.min_frequency})")
    text.add_argument("--max-length", type=int, help="tokens per text (default: enough for --length-percentile)")
    text.add_argument("--length-percentile", type=float, help=f"default {defaults.length_percentile}")
    text.add_argument("--lowercase", action="store_const", const=True, help="lower-case text before tokenizing")
    return parser


def _data_parser(subparsers):
    parser = subparsers.add_parser("data", help="prepare datasets")
    commands = parser.add_subparsers(dest="data_command", required=True)
    imports = commands.add_parser(
        "import", help="turn your own files into a tensorflow-datasets dataset",
        description="Writes a TFDS dataset (array_record) that `evonas search --dataset NAME --data-dir DIR` reads. "
                    "Each split option may be repeated; in the lines format each takes LABEL=FILE.")
    imports.add_argument("--name", required=True, help="dataset name, snake_case")
    imports.add_argument("--data-dir", required=True, help="directory that holds the dataset")
    for split in ("train", "validation", "test"):
        imports.add_argument(f"--{split}", action="append", default=[], metavar="FILE",
                             help=f"{split} file{' (required)' if split == 'train' else ''}")
    imports.add_argument("--format", required=True, choices=["tsv", "csv", "jsonl", "lines"],
                         help="lines: one text per line, one file per label (LABEL=FILE)")
    imports.add_argument("--text-column", action="append", default=[],
                         help="header name or 0-based index (JSONL: key); repeat to join columns")
    imports.add_argument("--label-column", help="header name or 0-based index (JSONL: key)")
    imports.add_argument("--no-header", action="store_true", help="TSV/CSV files have no header line")
    imports.add_argument("--encoding", default="utf-8", help="of every file (default: %(default)s; MR is cp1252)")
    imports.add_argument("--overwrite", action="store_true", help="replace an earlier import of this name")
    return parser


def _retrain_parser(subparsers):
    parser = subparsers.add_parser("retrain", help="retrain a search's best genomes with several seeds, report test "
                                   "accuracy and export the best model")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `evonas search`")
    parser.add_argument("--top-k", type=int, default=1, help="distinct genomes, best search fitness first "
                        "(default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per genome (default %(default)s)")
    parser.add_argument("--steps", type=int, help="training steps per member (default: 4 x the search's steps)")
    parser.add_argument("--with-validation", action="store_true", help="train on train + validation; the search's "
                        "best genome and its first seed are then exported")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _predict_parser(subparsers):
    parser = subparsers.add_parser("predict", help="classify lines of text with an exported model")
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="e.g. RUN_DIR/retrain/model")
    parser.add_argument("file", metavar="FILE", nargs="?", default="-", help="one text per line, UTF-8 "
                        "(default: standard input)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line: text, label, probability, "
                        "probabilities")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evonas", description="Evolutionary architecture search for text models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _search_parser(subparsers)
    _retrain_parser(subparsers)
    _predict_parser(subparsers)
    _data_parser(subparsers)
    replay.add_parser(subparsers)
    args = parser.parse_args(argv)
    _log_to_stderr()
    _keep_compiled_programs()
    if args.command == "search":
        return _search(args)
    if args.command == "retrain":
        return _retrain(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "data":
        return _data_import(args)
    if args.command == "replay":
        return replay.run_command(args)
    return 2


def _keep_compiled_programs() -> None:
    """JAX's persistent compilation cache, so that a new search of a space compiled before skips its minute of
    compiling; a cache directory the user chose (JAX_COMPILATION_CACHE_DIR) is kept."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "evonas" / "jax"))


def _log_to_stderr() -> None:
    """evonas's own log lines (e.g. counts of dropped rows) on stderr, without logging's prefixes."""
    logger = logging.getLogger("evonas")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _data_import(args) -> int:
    from evonas.data import DatasetError
    from evonas.text_files import import_files

    try:
        path = import_files(
            args.name, args.data_dir, {"train": args.train, "validation": args.validation, "test": args.test},
            file_format=args.format, text_columns=args.text_column, label_column=args.label_column,
            header=not args.no_header, encoding=args.encoding, overwrite=args.overwrite,
        )
    except DatasetError as error:
        print(f"evonas data import: {error}", file=sys.stderr)
        return 2
    print(f"imported {args.name!r} to {path.resolve()}")
    return 0


def _search(args) -> int:
    from evonas.checkpoint import ResumeError
    from evonas.data import DatasetError
    from evonas.search import SearchConfig, config_conflicts, load_run_config, run_search

    run_dir = Path(args.resume or args.out)
    try:
        values = json.loads(Path(args.config).read_text()) if args.config else {}
        values.update({field: getattr(args, option) for option, field in OPTION_TO_FIELD.items()
                       if getattr(args, option) is not None})
        if args.resume:
            config = load_run_config(run_dir)
            if conflicts := config_conflicts(config, values):
                raise ValueError(f"--resume continues {run_dir} with the config it was started with, and these "
                                 f"options differ from it: {'; '.join(conflicts)}")
        else:
            config = SearchConfig.from_dict(values)
    except (ValueError, OSError) as error:
        print(f"evonas search: {error}", file=sys.stderr)
        return 2
    if args.distributed or args.coordinator:
        _join_processes(args)
    if args.resume and (run_dir / "summary.json").exists():
        print(f"{run_dir.resolve()} already finished; nothing to resume (its summary.json is unchanged)")
        return 0
    try:
        summary = run_search(config, run_dir, progress=not args.quiet, resume=bool(args.resume))
    except (DatasetError, ResumeError) as error:
        print(f"evonas search: {error}", file=sys.stderr)
        return 2
    if summary["best_id"] is None:
        print("every child diverged; no architecture to report", file=sys.stderr)
        return 1
    print(f"best child {summary['best_id']}: validation accuracy {summary['best_val_accuracy']:.4f} "
          f"({summary['best_params']:,} parameters)")
    print(json.dumps(summary["best_architecture"], indent=2))
    print(f"{summary['children']} children in {summary['wall_seconds']:.0f} s, "
          f"{summary['compilations']} compilations; run directory: {run_dir.resolve()}")
    return 0


def _join_processes(args) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices across processes; GPU/TPU ignore it
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _retrain(args) -> int:
    from evonas.retrain import retrain

    try:
        results = retrain(args.run_dir, top_k=args.top_k, num_seeds=args.seeds, steps=args.steps,
                          with_validation=args.with_validation, progress=not args.quiet).results
    except ValueError as error:
        print(f"evonas retrain: {error}", file=sys.stderr)
        return 2
    for genome in results["genomes"]:
        print(f"rank {genome['rank']} (search child {genome['search_id']}, {genome['params']:,} parameters): test "
              f"accuracy {genome['test_accuracy_mean']:.4f} ± {genome['test_accuracy_std']:.4f} over "
              f"{len(results['seeds'])} seeds, {results['steps']} steps")
    exported = results["exported"]
    out = Path(args.run_dir).resolve() / "retrain"
    print(f"exported rank {exported['rank']}, seed {exported['seed']} (test accuracy {exported['test_accuracy']:.4f}) "
          f"to {out / exported['path']}; results in {out / 'results.json'}")
    return 0


def _predict(args) -> int:
    from evonas.export import load_model, predict_lines

    try:
        model = load_model(args.model_dir)
        with contextlib.nullcontext(sys.stdin.buffer) if args.file == "-" else open(args.file, "rb") as stream:
            for prediction in predict_lines(model, _utf8_lines(stream, args.file)):
                if args.json:
                    print(json.dumps(prediction, ensure_ascii=False))
                else:
                    print(f"{prediction['label']}\t{prediction['probability']:.4f}")
    except (ValueError, OSError) as error:
        print(f"evonas predict: {error}", file=sys.stderr)
        return 2
    return 0


def _utf8_lines(stream, name: str):
    """Each line without its line break; a line that is not UTF-8 is an error naming it."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ValueError(f"{'standard input' if name == '-' else name}: line {number} is not UTF-8") from None


if __name__ == "__main__":
    sys.exit(main())
