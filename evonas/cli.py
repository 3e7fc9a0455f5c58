"""The `evonas` command. Thin: parsing and printing only; the work lives in `evonas.search`."""

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from evonas import interrupts
from evonas.errors import InputError


def _search_parser(subparsers):
    from evonas import options

    parser = subparsers.add_parser("search", help="evolve text-classifier architectures on a task")
    run_dir = parser.add_mutually_exclusive_group()
    run_dir.add_argument("--out", help="run directory, absent or empty unless --overwrite (default: runs/search)")
    run_dir.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR from its last checkpoint, "
                         "with the config it was started with")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever --out holds (a run included), "
                        "whole")
    parser.add_argument("--config", metavar="FILE", help="SearchConfig keys: a JSON object, or FILE.py[:ARG], whose "
                        "get_config(ARG) returns them (e.g. experiments/configs/listops.py:smoke); options override "
                        "it")
    options.add_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    hosts = parser.add_argument_group("several hosts", "one search over the devices of several processes, through "
                                      "jax.distributed; every process runs the same command and writes its own --out")
    hosts.add_argument("--distributed", action="store_true", help="join the processes jax.distributed.initialize "
                       "finds by itself (TPU pods, SLURM, Open MPI), or those given below")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
    hosts.add_argument("--num-processes", type=int, help="processes in the search")
    hosts.add_argument("--process-id", type=int, help="this process' index, 0 to num-processes - 1")
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
    parser.add_argument("--steps", type=int, help="training steps per member (default: those of --epochs where the "
                        "search had epochs, else 4 x the search's steps)")
    parser.add_argument("--epochs", type=float, help="passes over the training data that set the steps, rounded up to "
                        "a multiple of 25 (default: 12 x the search's epochs, where it had them)")
    parser.add_argument("--with-validation", action="store_true", help="train on train + validation; the search's "
                        "best genome and its first seed are then exported")
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, help="train the genome that validation "
                        "chose again on train + validation, for the epochs of its median best step, and report that "
                        "model's test accuracy (default: on where the search set its steps by epochs)")
    parser.add_argument("--warmup-fraction", type=float, default=0.05, help="share of the steps over which the "
                        "learning rate warms up from 0, before its cosine decay to 0 (default %(default)s)")
    parser.add_argument("--eval-every", type=int, help="steps between validation scores; each member keeps its best "
                        "validation step's parameters; it must divide the steps (default: at most 10 scores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--tune", type=int, metavar="N", help="first tune each genome's learning rate and weight "
                        "decay: N settings of the space's choices, nearest the genome's first, picked on validation")
    parser.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation over all labelled data: "
                        "retrain once per fold, report mean ± std over folds; exports nothing")


def _predict_parser(subparsers):
    parser = subparsers.add_parser("predict", help="classify lines of text with an exported model")
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="e.g. RUN_DIR/retrain/model")
    parser.add_argument("file", metavar="FILE", nargs="?", default="-", help="one text per line, UTF-8 "
                        "(default: standard input)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line: text, label, probability, "
                        "probabilities")


def _replay_parser(subparsers):
    from evonas.replay import add_parser

    add_parser(subparsers)


def _replay(args) -> int:
    from evonas.replay import run_command

    return run_command(args)


def _report_parser(subparsers):
    parser = subparsers.add_parser("report", help="an HTML page of plots and tables about one or several runs")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="directories written by `evonas search`")
    parser.add_argument("--out", metavar="FILE.html", help="default: RUN_DIR/report.html for one run, "
                        "./report.html for several")


def _ablate_parser(subparsers):
    parser = subparsers.add_parser(
        "ablate", help="a grid of search settings x seeds from a Python config: one results table, a report per cell",
        description="Runs get_config(ARG)'s search for every cell of get_ablation(ARG)'s grid and every seed, each an "
                    "ordinary run directory OUT/CELL/seedN; a rerun skips finished runs and resumes unfinished ones. "
                    "Writes OUT/results.csv, results.md and results.json, and OUT/CELL/report.html.")
    parser.add_argument("config", metavar="CONFIG.py[:ARG]", help="e.g. experiments/configs/evolution_vs_random.py"
                        ":smoke; ARG is passed to get_config and get_ablation")
    parser.add_argument("--out", metavar="DIR", help="where the runs and tables go (default: runs/CONFIG, "
                        "runs/CONFIG-ARG with an ARG)")
    parser.add_argument("--no-reports", action="store_true", help="write the tables only, no report per cell")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _ablate(args) -> int:
    from evonas.ablate import load_ablation, run_ablation
    from evonas.config_files import split_spec

    ablation = load_ablation(args.config)
    if args.out == "":
        raise InputError("--out is empty; name a directory")
    path, arg = split_spec(args.config)
    out = Path(args.out or Path("runs") / (path.stem + (f"-{arg}" if arg else "")))
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory")
    try:
        with interrupts.remembered():
            results = run_ablation(ablation, out, progress=not args.quiet, reports=not args.no_reports)
    except KeyboardInterrupt:
        print(f"evonas ablate: interrupted; the same command continues it, skipping finished runs: evonas ablate "
              f"{shlex.quote(args.config)} --out {shlex.quote(str(out))}", file=sys.stderr)
        return 130
    print((out / "results.md").read_text(), end="")
    counts = results["executed"]
    print(f"{counts['ran']} runs run, {counts['resumed']} resumed, {counts['skipped']} finished before and skipped; "
          f"tables in {(out / 'results.md').resolve()} and results.csv")
    return 0


DEFAULT_OUT = "runs/search"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are InputErrors (one line, exit 2), with no abbreviated options."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        error = InputError(message)
        error.prog = self.prog  # e.g. "evonas search", for the line main prints
        raise error


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="evonas", description="Evolutionary architecture search for text models.")
    parser.add_argument("--version", action="version", version=f"evonas {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _search_parser(subparsers)
    _retrain_parser(subparsers)
    _predict_parser(subparsers)
    _data_parser(subparsers)
    _report_parser(subparsers)
    _replay_parser(subparsers)
    _ablate_parser(subparsers)
    command = "evonas"
    try:
        args, unknown = parser.parse_known_args(argv)
        command = f"evonas {args.command}" + (f" {args.data_command}" if args.command == "data" else "")
        if unknown:
            raise InputError(f"unrecognized arguments: {' '.join(unknown)}")
        _log_to_stderr()
        _keep_compiled_programs()
        commands = {"search": _search, "retrain": _retrain, "predict": _predict, "data": _data_import,
                    "report": _report, "replay": _replay, "ablate": _ablate}
        return commands[args.command](args)
    except InputError as error:
        print(f"{getattr(error, 'prog', command)}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _version() -> str:
    try:
        return importlib.metadata.version("evonas")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


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
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (tests replace it), one line per record."""

    def emit(self, record):
        print(self.format(record), file=sys.stderr)


def _data_import(args) -> int:
    from evonas.text_files import import_files

    path = import_files(
        args.name, args.data_dir, {"train": args.train, "validation": args.validation, "test": args.test},
        file_format=args.format, text_columns=args.text_column, label_column=args.label_column,
        header=not args.no_header, encoding=args.encoding, overwrite=args.overwrite,
    )
    print(f"imported {args.name!r} to {path.resolve()}")
    return 0


def _search(args) -> int:
    from evonas import run_dir as run_dirs
    from evonas.budget import before_data, resolve_values
    from evonas.options import SearchConfig, command_line_values, read_config_file
    from evonas.search import config_conflicts, load_run_config, run_search

    values = read_config_file(args.config) if args.config else {}
    values.update(command_line_values(args))
    if "" in (args.resume, args.out):
        raise InputError(f"{'--resume' if args.resume == '' else '--out'} is empty; name a directory")
    out = Path(args.resume or args.out or DEFAULT_OUT)
    if args.resume:
        if args.overwrite:
            raise InputError("--overwrite replaces a run and --resume continues one; give one of them")
        config = load_run_config(out)
        if conflicts := config_conflicts(config, values):
            raise InputError(f"--resume continues {out} with the config it was started with, and these options "
                             f"differ from it: {'; '.join(conflicts)}")
        if run_dirs.is_finished(out):
            print(f"{out.resolve()} already finished; nothing to resume (its summary.json is unchanged)")
            return 0
    else:
        SearchConfig(**before_data(values))  # every option's own checks, before the data loads
        run_dirs.check_new(out, args.overwrite)
        config = SearchConfig(**resolve_values(values))  # what the data and --budget decide for the options not given
    _check_hosts(args)
    if args.distributed or args.coordinator:
        _join_processes(args)
    try:
        with interrupts.remembered():
            summary = run_search(config, out, progress=not args.quiet, resume=bool(args.resume),
                                 overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(_interrupted(out, config), file=sys.stderr)
        return 130
    if summary["best_id"] is None:
        print("every child diverged or broke a constraint; no architecture to report", file=sys.stderr)
        return 1
    print(f"best child {summary['best_id']}: fitness {summary['best_fitness']:.4f}, validation accuracy "
          f"{summary['best_val_accuracy']:.4f} ({summary['best_params']:,} parameters)")
    print(json.dumps(summary["best_architecture"], indent=2))
    print(f"{summary['children']} children in {summary['wall_seconds']:.0f} s, "
          f"{summary['compilations']} compilations; run directory: {out.resolve()}")
    if "pareto_front" in summary:
        print(f"Pareto front: {out.resolve() / summary['pareto_front']}")
    return 0


def _interrupted(out: Path, config) -> str:
    """The one line that Ctrl-C ends a search with: how far it got, and how to continue it."""
    from evonas import run_dir as run_dirs

    done = run_dirs.generations_done(out) if out.is_dir() else None
    if done is None:
        return "evonas search: interrupted before its first checkpoint; nothing was written"
    total, per_generation = config.num_children // config.children_per_generation, config.children_per_generation
    at_most = "at most " if config.budget_minutes is not None else ""  # --budget decides how many
    return (f"evonas search: interrupted after {done} of {at_most}{total} generations ({done * per_generation} of "
            f"{at_most}{config.num_children} children); continue with: evonas search --resume "
            f"{shlex.quote(str(out.resolve()))}")


def _check_hosts(args) -> None:
    """The several-hosts options, checked before anything connects."""
    if args.coordinator is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", args.coordinator):
        raise InputError(f"--coordinator must be HOST:PORT, e.g. 10.0.0.1:1234, got {args.coordinator!r}")
    if args.num_processes is not None and args.num_processes < 1:
        raise InputError(f"--num-processes must be at least 1, got {args.num_processes}")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 1):
        raise InputError(f"--process-id must be from 0 to --num-processes - 1, got {args.process_id}")
    if args.coordinator is not None and None in (args.num_processes, args.process_id):
        raise InputError("--coordinator needs --num-processes and --process-id")


def _join_processes(args) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices across processes; GPU/TPU ignore it
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _retrain(args) -> int:
    from evonas.retrain import retrain

    results = retrain(args.run_dir, top_k=args.top_k, num_seeds=args.seeds, steps=args.steps,
                      with_validation=args.with_validation, progress=not args.quiet,
                      warmup_fraction=args.warmup_fraction, eval_every=args.eval_every,
                      epochs=args.epochs, tune=args.tune, folds=args.folds, refit=args.refit).results
    out = Path(args.run_dir).resolve() / "retrain"
    if args.folds is not None:
        for fold in results["folds"]:
            print(f"fold {fold['fold']}: test accuracy {fold['test_accuracy']:.4f} (rank {fold['rank']}, mean over "
                  f"{len(results['seeds'])} seeds)")
        print(f"{results['num_folds']} folds: test accuracy {results['test_accuracy_mean']:.4f} ± "
              f"{results['test_accuracy_std']:.4f}; results in {out / 'results.json'}")
        return 0
    for rank, tuned in enumerate(results["tuning"] or []):
        print(f"rank {rank} tuned: {tuned['chosen_setting']} (validation accuracy "
              f"{tuned['validation_accuracies'][tuned['chosen']]:.4f} of {len(tuned['settings'])} settings)")
    for genome in results["genomes"]:
        std = genome["test_accuracy_std"]
        spread = f"± {std:.4f} over {len(results['seeds'])} seeds" if std is not None else "(one seed: std undefined)"
        print(f"rank {genome['rank']} (search child {genome['search_id']}, {genome['params']:,} parameters): test "
              f"accuracy {genome['test_accuracy_mean']:.4f} {spread}, {results['steps']} steps, best validation "
              f"at steps {genome['best_steps']}")
    if refit := results["refit"]:
        print(f"refit rank {refit['rank']} on train + validation for {refit['steps']} steps ({refit['epochs']:.1f} "
              f"epochs): test accuracy {refit['test_accuracy_mean']:.4f}"
              + (f" ± {refit['test_accuracy_std']:.4f}" if refit["test_accuracy_std"] is not None else ""))
    exported = results["exported"]
    print(f"exported rank {exported['rank']}, seed {exported['seed']} (test accuracy {exported['test_accuracy']:.4f}) "
          f"to {out / exported['path']}; results in {out / 'results.json'}")
    return 0


def _report(args) -> int:
    from evonas.report import write_report

    try:
        path = write_report(args.run_dirs, args.out)
    except OSError as error:
        raise InputError(f"{error.filename}: {error.strerror}") from None
    print(f"report written to {path.resolve()}")
    return 0


def _predict(args) -> int:
    from evonas.export import load_model, predict_lines

    model = load_model(args.model_dir)
    if args.file != "-" and not Path(args.file).is_file():
        raise InputError(f"FILE {args.file}: no such file")
    with contextlib.nullcontext(sys.stdin.buffer) if args.file == "-" else open(args.file, "rb") as stream:
        for prediction in predict_lines(model, _utf8_lines(stream, args.file)):
            if args.json:
                print(json.dumps(prediction, ensure_ascii=False))
            else:
                print(f"{prediction['label']}\t{prediction['probability']:.4f}")
    return 0


def _utf8_lines(stream, name: str):
    """Each line without its line break; a line that is not UTF-8 is an error naming it."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"{'standard input' if name == '-' else name}: line {number} is not UTF-8") from None


def run(argv: list[str] | None = None) -> NoReturn:
    """The `evonas` command: `main`'s exit status. An interrupted command has saved everything it computed
    before naming how to continue, so it ends at once, flushing its output but not waiting on library threads
    or exit hooks (one of which once held a Ctrl-C'd search open past its message)."""
    code = main(argv)
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
