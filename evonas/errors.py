"""Errors in what the user gave, as opposed to bugs in evonas.

Every check of an option, a config file, a search space, a genome, a run directory or a dataset raises an
`InputError` whose message is one line naming the option or file and what is allowed. The `evonas` command
prints it as `evonas <command>: error: <message>` and exits with status 2, without a traceback; any other
exception is a bug, and keeps its traceback.

`InputError` is a `ValueError`, so code that catches bad values keeps working.
"""


class InputError(ValueError):
    """Bad input from the user: an option, a config key, a file or a directory."""


class ConfigError(InputError):
    """A search option or config-file key out of its declared range, of the wrong type, or unknown."""


class SpaceError(InputError):
    """A search space that cannot be built, or a genome that does not belong to its space."""


class RunDirError(InputError):
    """A run directory that cannot be written (it holds a run, is a file, ...) or read as a search run."""
