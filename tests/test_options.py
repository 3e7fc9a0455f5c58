"""One declaration per option: the CLI, the config-file checks and SearchConfig's checks all come from it."""

import argparse
import dataclasses

import pytest

from evonas import cli
from evonas.errors import ConfigError
from evonas.options import SearchConfig, add_arguments


def search_flags() -> dict[str, str]:
    """Flag -> SearchConfig field of `evonas search`, read from its parser."""
    parser = argparse.ArgumentParser()
    cli._search_parser(parser.add_subparsers())
    search = parser._subparsers._group_actions[0].choices["search"]
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    return {flag: action.dest for action in search._actions for flag in action.option_strings if action.dest in fields}


def test_every_field_is_declared_once_and_every_flag_comes_from_a_declaration():
    assert set(SearchConfig.OPTIONS) == {f.name for f in dataclasses.fields(SearchConfig)}
    declared = {spec.flag: name for name, spec in SearchConfig.OPTIONS.items() if spec.flag}
    deprecated = {old: name for name, spec in SearchConfig.OPTIONS.items() for old in spec.deprecated_flags}
    assert search_flags() == {**declared, **deprecated}
    assert deprecated == {"--batch": "children_per_generation"}
    assert declared["--batch-size"] == "batch_size" and declared["--children-per-generation"] == "children_per_generation"


def test_defaults_satisfy_their_own_declarations():
    config = SearchConfig()
    for name, spec in SearchConfig.OPTIONS.items():
        assert spec.check(getattr(config, name), name) == getattr(config, name)


@pytest.mark.parametrize(("values", "message"), [
    ({"steps": True}, "--steps must be an integer from 1"),
    ({"mutation_rate": "0.1"}, "--mutation-rate must be a number from 0 to 1, got '0.1'"),
    ({"mutation_rate": float("nan")}, "--mutation-rate must be a number from 0 to 1, got nan"),
    ({"lowercase": 1}, "--lowercase must be true or false"),
    ({"dataset": 3}, "--dataset must be a string (or null)"),
    ({"space": []}, "config key 'space' must be a JSON object"),
    ({"steps_per_call": 0}, "config key 'steps_per_call' must be an integer from 1"),
])
def test_a_config_gets_the_declared_checks_however_it_is_made(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**values)
    with pytest.raises(ConfigError, match="run.json: "):
        SearchConfig.from_dict(values, source="run.json")


def test_an_int_given_for_a_float_option_becomes_a_float():
    assert SearchConfig(mutation_rate=1).mutation_rate == 1.0 and isinstance(SearchConfig(mutation_rate=1).mutation_rate,
                                                                              float)


def test_add_arguments_gives_each_default_in_the_help():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "--children-per-generation N" in help_text and "(default 8)" in help_text
