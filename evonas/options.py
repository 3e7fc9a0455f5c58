"""Every option of a search, declared once: its type, allowed values, help and command-line flag.

`SearchConfig` is a dataclass whose fields are made by `option(...)`. From those declarations come the
flags of `evonas search` (`add_arguments`), the checks of a `--config` file (`read_config_file`) and the
checks of every `SearchConfig`, however it was made (`__post_init__`). A bad value is a `ConfigError`
naming the option (or the file and key) and what is allowed (`evonas.option`, the declaration itself).
"""

import dataclasses
import inspect
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from evonas.errors import ConfigError, InputError, SpaceError
from evonas.fitness import METRICS, Objective
from evonas.hurdles import Hurdles
from evonas.member import COMPUTE_DTYPES, FORMS, TrainConfig
from evonas.option import Option, finish_options, is_kind, option, shown
from evonas.strategies import STRATEGIES
from evonas.text import KINDS as TOKENIZERS


@finish_options
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything a run depends on; `config.json` holds it, so a run can be repeated exactly."""

    OPTIONS: ClassVar[dict[str, Option]] = {}  # field name -> Option, filled from the declarations below

    seed: int = option(0, "the search's seed", low=0, high=2**32 - 1)
    strategy: str = option("evolution", "how children are bred: aging evolution, uniform random genomes "
                           "(the baseline), or evosax's SimpleGA (ga) or CMA-ES (cma_es)", choices=tuple(STRATEGIES))
    # Many short-trained children beat a few long-trained ones: evolution needs generations to select over
    # (experiments/README.md, "Evolution against random search"). About a minute on a quiet 2-core CPU.
    population_size: int = option(16, "population size P: members alive at once; the first P children are "
                                  "random", flag="--population", low=1, high=2**20)
    sample_size: int = option(4, "tournament size S: the fittest of S random members is a parent", low=1)
    num_children: int = option(96, "children evaluated in total, a multiple of --children-per-generation",
                               flag="--children", low=1, high=2**24)
    children_per_generation: int = option(8, "children bred from the same population and trained together per "
                                          "generation; 1 is classic regularized evolution", low=1, high=2**20,
                                          deprecated_flags=("--batch",))
    steps: int = option(150, "training steps per child", low=1, high=10**7)
    mutation_rate: float = option(0.1, "per-gene probability of a re-drawn gene (at least one changes)", low=0, high=1)
    crossover_rate: float = option(0.5, "probability that a child is the crossover of two parents", low=0, high=1)
    # What selection uses, from each child's metrics (evonas.fitness.METRICS); the default is today's fitness.
    objective: dict[str, Any] = option({"val_accuracy": 1.0},  # noqa: RUF009 - a default_factory
                                       "fitness as a weighted sum of metrics, a JSON object metric -> weight, e.g. "
                                       "'{\"val_accuracy\": 1, \"latency_ms_b1\": -0.01}'", group="objective")
    constraints: dict[str, Any] = option({},  # noqa: RUF009 - a default_factory
                                         "hard constraints, a JSON object metric -> '<= X' or '>= X', e.g. "
                                         "'{\"params\": \"<= 1e6\"}': a child that breaks one is never a parent "
                                         "nor the best", group="objective")
    pareto: dict[str, Any] = option({},  # noqa: RUF009 - a default_factory
                                    "Pareto mode: a JSON object of two or more metrics -> 'max' or 'min', e.g. "
                                    "'{\"val_accuracy\": \"max\", \"params\": \"min\"}'; aging evolution "
                                    "then selects by non-dominated rank and crowding (NSGA-II) and the run keeps "
                                    "pareto.json", group="objective")
    batch_size: int = option(32, "training examples per step (the minibatch size)", low=1, high=2**16)
    steps_per_call: int = option(25, "training steps fused into one compiled call", flag=None, low=1, high=10**7)
    # Progressive dynamic hurdles (So et al. 2019; evonas.hurdles): measured in experiments/README.md, "Hurdles".
    hurdle_steps: tuple[int, ...] | None = option(
        None, "train steps after which a generation's children still training are scored on validation; those "
        "below the hurdle stop there and keep that fitness, the rest train on (default: none, every child trains "
        "--steps)", kind=tuple, low=1)
    hurdle_quantile: float | None = option(None, "the hurdle as this quantile of the scores of the children still "
                                           "training (default: their mean)", kind=float, low=0, high=1)
    # Budgets from the data and the clock (evonas.budget): derived values are written into config.json.
    epochs: float | None = option(None, "training steps per child as passes over the train split: the steps are "
                                  "epochs x train examples / batch size, rounded up to a multiple of 25 (default: 1 "
                                  "with --dataset; the built-in task keeps --steps)", kind=float, above=0, high=10**4)
    budget_minutes: float | None = option(None, "fit the search to this wall-clock limit in minutes: once a generation "
                                          "compiled nothing, the mean time of those measured plans how many whole "
                                          "generations fit (at most --children): the search stops when the next "
                                          "would end past the limit; the time of every session counts",
                                          flag="--budget", kind=float, above=0, high=7 * 24 * 60)
    # A cheap fitness predictor (evonas.predictor): measured in experiments/README.md, "Fitness predictor".
    predictor_pool: int = option(1, "candidates proposed per trained child: the strategy proposes K x "
                                 "--children-per-generation, and a ridge ranker on one-hot genes, fitted to the "
                                 "history so far, keeps the top predicted; 1 is off", low=1, high=64)
    predictor_min_records: int | None = option(None, "candidate children the history must hold before the "
                                               "predictor ranks; until then the strategy's own children are "
                                               "trained (default: --population)", kind=int, low=2, high=2**24)
    # Weight inheritance (Real et al. 2017; evonas.inherit): measured in experiments/README.md, "Weight inheritance".
    inherit: bool = option(False, "start each bred child from its first parent's trained parameters wherever it "
                           "keeps a part's op and shape (embedding, positions, final norm, head, each block's "
                           "norm and op); the other parts start afresh")
    population_form: str = option(
        "auto", "how a generation's members share the devices: 'member', one after another (best on CPUs); "
        "'grouped', side by side, grouped by the op each block runs (GPUs, TPUs); 'auto' picks by platform",
        choices=FORMS)
    compute_dtype: str = option("auto", "dtype of the forward and backward passes; 'auto' is bfloat16 on GPUs and "
                                "TPUs, float32 on CPUs; weights and optimizer stay float32", choices=COMPUTE_DTYPES)
    memory_budget_gb: float | None = option(None, "memory for the members trained at once; more members are trained "
                                            "in chunks (default: half the RAM, or of the devices' memory)",
                                            kind=float, above=0)
    task: str = option("listops", "the built-in task, used when no dataset is given", flag=None, choices=("listops",))
    task_seed: int = option(0, "seed of the task's data, the same across search seeds", flag=None, low=0,
                            high=2**32 - 1)
    # Keyword arguments of data.listops_task. Depth 2 with 2 arguments (at most 10 tokens) is learnable in
    # 150 steps, yet order matters (experiments/README.md: order-blind models reach .43, attention or recurrence .59).
    listops: dict[str, Any] = option({"max_depth": 2, "max_args": 2, "max_length": 12},  # noqa: RUF009 - a factory
                                     "keyword arguments of evonas.data.listops_task", flag=None)
    dataset: str | None = option(None, "TFDS name, e.g. glue/sst2, or the name given to `evonas data import`",
                                 kind=str, group="real text")
    data_dir: str | None = option(None, "where the dataset is prepared (default: tensorflow-datasets' default, "
                                  "~/tensorflow_datasets or $TFDS_DATA_DIR)", kind=str, group="real text")
    text_feature: str | None = option(None, "text feature (default: found from the dataset's metadata)", kind=str,
                                      group="real text")
    label_feature: str | None = option(None, "ClassLabel feature (default: found from the dataset's metadata)",
                                       kind=str, group="real text")
    tokenizer: str = option("word", "'word': vocabulary from train; 'byte': UTF-8 bytes", choices=TOKENIZERS,
                            group="real text")
    vocab_size: int = option(20_000, "word ids at most, <pad> and <unk> included", low=3, high=2**24,
                             group="real text")
    min_frequency: int = option(2, "rarer training words become <unk>", low=1, group="real text")
    max_length: int | None = option(None, "tokens per text (default: enough for --length-percentile)", kind=int,
                                    low=1, high=2**16, group="real text")
    length_percentile: float = option(99.0, "percentile of training lengths that --max-length covers", above=0,
                                      high=100, group="real text")
    lowercase: bool = option(False, "lower-case text before tokenizing", group="real text")
    # Keyword overrides of text_classifier_space. The default narrows width and depth so that the
    # default search compiles and trains on a 2-core CPU in minutes; `{}` searches the whole space.
    space: dict[str, Any] = option({"widths": [32, 64], "max_blocks": 3},  # noqa: RUF009 - a default_factory
                                   "keyword overrides of evonas.space.text_classifier_space", flag=None)

    def __post_init__(self):
        for name, spec in self.OPTIONS.items():
            object.__setattr__(self, name, spec.check(getattr(self, name), describe(name)))
        _check_keywords(self.listops, _listops_keywords(), "listops")
        self.search_space()  # the space's own checks
        self.make_objective()  # the objective's own checks
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The checks that relate options to each other, naming every option involved."""
        per_generation = self.children_per_generation
        if self.num_children % per_generation:
            raise ConfigError(f"{describe('num_children')} ({self.num_children}) must be a multiple of "
                              f"{describe('children_per_generation')} ({per_generation})")
        if per_generation > self.population_size:
            raise ConfigError(f"{describe('children_per_generation')} ({per_generation}) must be at most "
                              f"{describe('population_size')} ({self.population_size}): otherwise one generation "
                              "would replace its own children")
        if self.strategy == "evolution" and self.sample_size > self.population_size:
            raise ConfigError(f"{describe('sample_size')} ({self.sample_size}) must be at most "
                              f"{describe('population_size')} ({self.population_size})")
        if self.pareto and self.strategy not in ("evolution", "random"):
            raise ConfigError(f"{describe('pareto')} selects by Pareto rank, which only --strategy evolution does "
                              f"(and random, which does not select); got --strategy {self.strategy}")
        if self.hurdle_steps is not None:
            if list(self.hurdle_steps) != sorted(set(self.hurdle_steps)):
                raise ConfigError(f"{describe('hurdle_steps')} must increase, got {list(self.hurdle_steps)}")
            if self.hurdle_steps[-1] >= self.steps:
                raise ConfigError(f"{describe('hurdle_steps')} ({self.hurdle_steps[-1]}) must be below "
                                  f"{describe('steps')} ({self.steps})")
        elif self.hurdle_quantile is not None:
            raise ConfigError(f"{describe('hurdle_quantile')} sets how high hurdles are, but {describe('hurdle_steps')} "
                              "sets none")
        if self.predictor_min_records is not None and self.predictor_pool == 1:
            raise ConfigError(f"{describe('predictor_min_records')} sets when the predictor starts, but "
                              f"{describe('predictor_pool')} is 1, which turns it off")
        if self.inherit and self.strategy != "evolution":
            raise ConfigError(f"{describe('inherit')} starts children from their parents' parameters, and only "
                              f"--strategy evolution breeds children from parents; got --strategy {self.strategy}")
        if self.strategy == "evolution" and self.search_space().size == 1:
            raise ConfigError("the config's 'space' has a single genome, so evolution cannot change one; "
                              "give some gene two or more choices")

    def make_objective(self) -> Objective:
        """The `Objective` that `objective`, `constraints` and `pareto` declare."""
        return Objective.from_options(self.objective, self.constraints, self.pareto,
                                      names=(describe("objective"), describe("constraints"), describe("pareto")))

    def search_space(self):
        """The `SearchSpace` that `space` declares."""
        from evonas.space import text_classifier_space

        known = set(inspect.signature(text_classifier_space).parameters)
        if unknown := sorted(set(self.space) - known):
            raise ConfigError(f"unknown space options {unknown} in config key 'space'; known are {sorted(known)}")
        try:
            return text_classifier_space(**self.space)
        except SpaceError as error:
            raise SpaceError(f"config key 'space': {error}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> "SearchConfig":
        """A config from `values` (e.g. a config file's object, which `source` names in errors)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source or 'a config'} must hold a JSON object of config keys, got {shown(values)}")
        _check_known(values, source)
        return cls(**(check_config_values(values, source) if source else values))

    def hurdles(self) -> Hurdles | None:
        """The progressive hurdles of each generation, or None."""
        return None if self.hurdle_steps is None else Hurdles(self.hurdle_steps, self.hurdle_quantile)

    def min_predictor_records(self) -> int:
        """Candidates in history before the predictor ranks (`predictor_min_records`, default the population)."""
        return self.population_size if self.predictor_min_records is None else self.predictor_min_records

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            steps_per_call=math.gcd(self.steps, self.steps_per_call, *(self.hurdle_steps or ())),
            form=self.population_form,
            compute_dtype=self.compute_dtype,
        )


def describe(name: str) -> str:
    """How an error names an option: its flag, or its config key if it has none."""
    flag = SearchConfig.OPTIONS[name].flag
    return flag if flag else f"config key {name!r}"


def _listops_keywords() -> set[str]:
    from evonas.data import listops_task

    return set(inspect.signature(listops_task).parameters) - {"seed"}  # task_seed sets it


def _check_keywords(values: dict[str, Any], known: set[str], key: str) -> None:
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"unknown {key} options {unknown} in config key {key!r}; known are {sorted(known)}")
    for name, value in values.items():
        if not is_kind(value, int) or not 1 <= value <= 10**6:  # a bound on typos: larger tasks take minutes
            raise ConfigError(f"config key {key!r}: {name} must be an integer from 1 to 1,000,000, got {shown(value)}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The checked values of a `--config` file: a JSON object, or `FILE.py[:ARG]`, whose `get_config(ARG)` returns
    one (evonas.config_files); known keys, each of its declared type and range."""
    from evonas.config_files import is_python_config, load_python_config

    if is_python_config(str(path)):
        return check_config_values(load_python_config(str(path)), f"--config {path}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--config {path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"--config {path}: not valid JSON: {error.msg} at line {error.lineno}, column "
                         f"{error.colno}") from None
    if not isinstance(values, dict):
        raise InputError(f"--config {path} must hold a JSON object of config keys, got {shown(values)}")
    return check_config_values(values, f"--config {path}")


def check_config_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with each key known and each value of its declared type and range; errors name `source`."""
    _check_known(values, source)
    return {name: SearchConfig.OPTIONS[name].check(value, f"{source}: {name}") for name, value in values.items()}


def _check_known(values: dict[str, Any], source: str | None) -> None:
    if unknown := sorted(set(values) - set(SearchConfig.OPTIONS)):
        raise ConfigError(f"{source + ': ' if source else ''}unknown config keys {unknown}; known keys are "
                          f"{sorted(SearchConfig.OPTIONS)}")


_METAVARS = {int: "N", float: "X", dict: "JSON"}


def _json_object(text: str) -> Any:
    """A flag's JSON value; whether it is an object is the option's own check."""
    import argparse

    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg} at column {error.colno}): {text!r}") from None


_PARSERS = {dict: _json_object}


def add_arguments(parser) -> None:
    """The flags of every option that has one, in argument groups, with each default in its help."""
    groups = {"search": parser, "objective": parser.add_argument_group(
        "objective", f"what selection uses, from each child's metrics ({', '.join(METRICS)})"),
        "real text": parser.add_argument_group("real text", "a prepared tensorflow-datasets dataset instead of ListOps")}
    defaults = SearchConfig.__dataclass_fields__
    for name, spec in SearchConfig.OPTIONS.items():
        if not spec.flag:
            continue
        field = defaults[name]
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = spec.help + ("" if default is None or spec.kind is bool else f" (default {default})")
        group = groups[spec.group]
        if spec.kind is bool:
            group.add_argument(spec.flag, dest=name, action="store_const", const=True, help=help_text)
        elif spec.kind is tuple:
            group.add_argument(spec.flag, dest=name, type=int, nargs="+", metavar="N", help=help_text)
        else:
            group.add_argument(spec.flag, dest=name, type=_PARSERS.get(spec.kind, spec.kind) if spec.choices is None else str,
                               choices=spec.choices, metavar=None if spec.choices else _METAVARS.get(spec.kind, name.split("_")[-1].upper()),
                               help=help_text)
        for old in spec.deprecated_flags:
            group.add_argument(old, dest=name, type=spec.kind, action=_deprecated(old, spec.flag), metavar="N",
                               help=f"deprecated spelling of {spec.flag}")


def _deprecated(old: str, new: str):
    import argparse
    import sys

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"evonas: warning: {old} is deprecated; it means {new}, not the minibatch size (--batch-size)",
                  file=sys.stderr)
            setattr(namespace, self.dest, values)

    return Deprecated


def command_line_values(args) -> dict[str, Any]:
    """The options given on the command line (argparse namespace), checked, by field name."""
    return {name: spec.check(getattr(args, name), spec.flag) for name, spec in SearchConfig.OPTIONS.items()
            if spec.flag and getattr(args, name, None) is not None}
