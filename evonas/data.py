"""Text classification tasks as padded int32 token arrays, and the built-in generated tasks."""

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from evonas.errors import InputError
from evonas.text import PAD_ID, Tokenizer


class DatasetError(InputError):
    """A dataset that cannot be read, written or loaded as asked; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class TextSplit:
    """One split of a task: padded token ids and their class labels."""

    tokens: np.ndarray  # int32[N, L], PAD_ID after the last real token
    labels: np.ndarray  # int32[N]

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.labels.shape != self.tokens.shape[:1]:
            raise ValueError(
                f"tokens {self.tokens.shape} and labels {self.labels.shape} "
                "do not form [N, L] and [N]"
            )

    @property
    def mask(self) -> np.ndarray:
        """bool[N, L], True on real tokens, so models can ignore padding."""
        return self.tokens != PAD_ID

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TextTask:
    """A classification task: three splits encoded by one tokenizer, and the names of its classes.

    The tokenizer is part of the task because new text must be encoded the same way at predict time.
    """

    name: str
    train: TextSplit
    validation: TextSplit
    test: TextSplit
    tokenizer: Tokenizer
    label_names: tuple[str, ...]  # label_names[c] names class c

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def vocab(self) -> tuple[str, ...]:
        """vocab[i] is the string of token id i (empty for a byte tokenizer)."""
        return self.tokenizer.vocab

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def max_length(self) -> int:
        return self.train.tokens.shape[1]


TOKENIZER_FILE, TASK_FILE = "tokenizer.json", "task.json"


def write_task_files(task: TextTask, directory: str | Path) -> None:
    """Writes what new text needs to be classified like the task's: `tokenizer.json` and `task.json`.

    `task.json` holds the task's name, its label names (class i is label_names[i]) and split sizes.
    """
    directory = Path(directory)
    task.tokenizer.save(directory / TOKENIZER_FILE)
    description = {
        "name": task.name,
        "label_names": list(task.label_names),
        "num_examples": {split: len(getattr(task, split)) for split in ("train", "validation", "test")},
    }
    (directory / TASK_FILE).write_text(json.dumps(description, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_task_files(directory: str | Path) -> tuple[Tokenizer, tuple[str, ...]]:
    """The tokenizer and label names that `write_task_files` wrote to directory."""
    directory = Path(directory)
    description = json.loads((directory / TASK_FILE).read_text(encoding="utf-8"))
    return Tokenizer.load(directory / TOKENIZER_FILE), tuple(description["label_names"])


# --- ListOps -----------------------------------------------------------------------------------

_LISTOPS_OPERATORS: dict[str, Callable[[list[int]], int]] = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda args: sorted(args)[(len(args) - 1) // 2],  # lower median for even counts
    "[SM": lambda args: sum(args) % 10,
}
_DIGITS = tuple(str(digit) for digit in range(10))
_LISTOPS_VOCAB = ("<pad>", *_DIGITS, *_LISTOPS_OPERATORS, "]")
_NEST_PROBABILITY = 0.6  # at the defaults: mean ~29 tokens, ~1% of trees longer than 64 resampled
_MAX_ATTEMPTS_PER_EXAMPLE = 100  # gives up on settings where fitting, distinct trees are too rare
_MAX_MISSES_IN_A_ROW = 100_000  # ... or exhausted: so that asking for more trees than exist fails fast, not in hours


def evaluate_listops(tokens: Sequence[str]) -> int:
    """Value of a ListOps expression given as token strings, e.g. ["[MAX", "2", "9", "]"] -> 9.

    MED is the lower median (the smaller middle value for an even count); SM is the sum modulo 10.

    Raises:
        ValueError: if the tokens do not form exactly one well-formed expression.
    """
    open_operators: list[str] = []
    arguments: list[list[int]] = [[]]  # arguments[-1] collects the innermost open operator's args
    for token in tokens:
        if token in _LISTOPS_OPERATORS:
            open_operators.append(token)
            arguments.append([])
        elif token == "]":
            if not open_operators or not arguments[-1]:
                raise ValueError(f"unmatched or empty ']' in {' '.join(tokens)!r}")
            value = _LISTOPS_OPERATORS[open_operators.pop()](arguments.pop())
            arguments[-1].append(value)
        elif token in _DIGITS:
            arguments[-1].append(int(token))
        else:
            raise ValueError(f"unknown ListOps token {token!r}")
    if open_operators or len(arguments[0]) != 1:
        raise ValueError(f"not a single complete expression: {' '.join(tokens)!r}")
    return arguments[0][0]


def listops_task(
    seed: int = 0,
    num_train: int = 8000,
    num_validation: int = 1000,
    num_test: int = 1000,
    max_length: int = 64,
    max_depth: int = 3,
    max_args: int = 4,
) -> TextTask:
    """Generate a small ListOps task (Nangia & Bowman, 2018): predict a nested expression's value.

    An expression such as `[MAX 2 9 [MIN 4 7 ] 0 ]` applies MAX, MIN, MED (lower median: the
    smaller middle value for an even count) or SM (sum modulo 10) to 2..max_args arguments, each a
    digit or a nested expression; the label is its value (10 classes). Every expression nests at
    least twice (when max_depth allows), because a flat one is solvable from its bag of tokens, and
    at most max_depth operators deep. Expressions longer than max_length are resampled, never
    truncated. No expression occurs twice in the task, so the splits share none: validation avoids
    train, and test avoids both.

    Args:
        seed: the same arguments always give identical arrays; each split has its own random stream.
        num_train, num_validation, num_test: examples per split.
        max_length: padded length of every token row.
        max_depth: deepest nesting of operators.
        max_args: most arguments one operator takes (at least 2).

    Returns:
        A TextTask with vocab `<pad>`, the digits `0`..`9`, `[MAX`, `[MIN`, `[MED`, `[SM`, `]`, and
        label names `0`..`9`.

    Raises:
        ValueError: if the settings cannot produce enough distinct expressions within max_length.
    """
    if max_depth < 1 or max_args < 2:
        raise DatasetError(f"listops needs max_depth >= 1 and max_args >= 2, got {max_depth} and {max_args}")
    shortest = 4 if max_depth == 1 else 7  # `[MAX 1 2 ]`, `[MAX [MAX 1 2 ] 3 ]`
    if max_length < shortest:
        raise DatasetError(f"listops max_length {max_length} is below the shortest expression ({shortest})")

    split_seeds = np.random.SeedSequence(seed).spawn(3)
    taken: set[str] = set()
    splits = []
    for split_seed, num_examples in zip(split_seeds, (num_train, num_validation, num_test)):
        draw = _uniform_draws(np.random.default_rng(split_seed))
        expressions = _sample_distinct_expressions(
            draw, num_examples, taken, max_length, max_depth, max_args
        )
        taken.update(expressions)
        splits.append(_listops_split(list(expressions.values()), max_length))
    train, validation, test = splits
    return TextTask("listops", train, validation, test, listops_tokenizer(max_length), label_names=_DIGITS)


def listops_tokenizer(max_length: int = 64) -> Tokenizer:
    """ListOps's tokenizer: whitespace-separated tokens of its fixed vocabulary.

    The vocabulary has no `<unk>` (adding one at id 1 would shift every ListOps id), so encoding an
    unknown token raises a ValueError naming it.
    """
    return Tokenizer("word", max_length=max_length, vocab=_LISTOPS_VOCAB, pattern=r"\S+")


def _uniform_draws(rng: np.random.Generator) -> Callable[[], float]:
    """A function returning the next uniform float in [0, 1); chunked draws keep generation fast."""

    def chunks():
        while True:
            yield from rng.random(4096).tolist()

    return functools.partial(next, chunks())


def _pick(draw: Callable[[], float], options: Sequence[str]) -> str:
    return options[int(draw() * len(options))]


def _sample_expression(
    draw: Callable[[], float], depth: int, max_args: int, must_nest: bool = False
) -> list[str]:
    """A random expression at most `depth` operators deep; `must_nest` forces one nested argument.

    The forced argument only nests while depth > 1.
    """
    operator = _pick(draw, tuple(_LISTOPS_OPERATORS))
    num_args = 2 + int(draw() * (max_args - 1))
    forced_position = int(draw() * num_args) if must_nest else -1
    tokens = [operator]
    for position in range(num_args):
        if depth > 1 and (position == forced_position or draw() < _NEST_PROBABILITY):
            tokens += _sample_expression(draw, depth - 1, max_args)
        else:
            tokens.append(_pick(draw, _DIGITS))
    tokens.append("]")
    return tokens


def _sample_distinct_expressions(
    draw: Callable[[], float],
    num_examples: int,
    taken: set[str],
    max_length: int,
    max_depth: int,
    max_args: int,
) -> dict[str, list[str]]:
    """`num_examples` distinct expressions that fit max_length and are not in `taken`, by text."""
    expressions: dict[str, list[str]] = {}
    max_attempts = _MAX_ATTEMPTS_PER_EXAMPLE * num_examples
    since_new = 0  # attempts since the last new expression: a long run of misses means the settings are exhausted
    for attempt in range(max_attempts):
        if len(expressions) == num_examples or since_new > _MAX_MISSES_IN_A_ROW:
            max_attempts = attempt
            break
        tokens = _sample_expression(draw, max_depth, max_args, must_nest=True)
        text = " ".join(tokens)
        since_new += 1
        if len(tokens) <= max_length and text not in taken and text not in expressions:
            expressions[text] = tokens
            since_new = 0
    if len(expressions) < num_examples:
        raise DatasetError(
            f"listops: found only {len(expressions)} of {num_examples} distinct expressions within "
            f"{max_length} tokens after {max_attempts} attempts; raise max_length or ask for fewer"
        )
    return expressions


def _listops_split(expressions: list[list[str]], max_length: int) -> TextSplit:
    """Encode expressions as PAD_ID-padded token ids, labelled by their value."""
    tokens = listops_tokenizer(max_length).encode([" ".join(expression) for expression in expressions])
    labels = np.array([evaluate_listops(expression) for expression in expressions], dtype=np.int32)
    return TextSplit(tokens, labels)
