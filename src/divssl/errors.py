"""Exception types shared by the library and the command line.

``ConfigError`` is any bad user input (config key, pool spec, CLI option): the CLI maps it to
exit code 2 and writes nothing. ``RunFailed`` is a failure at run time (NaN loss, ...): exit 1.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """Bad user input, raised before any compute starts.

    Args:
        field: dotted name of the offending field (``"subset.size"``, ``"method"``, ...).
        message: what is wrong.
        choices: the valid choices, listed in the message when given.
    """

    def __init__(self, field: str, message: str, choices: Iterable[str] | None = None) -> None:
        self.field = field
        self.choices = sorted(choices) if choices is not None else None
        text = f"{field}: {message}"
        if self.choices is not None:
            text += f" (valid choices: {', '.join(self.choices)})"
        super().__init__(text)


class RunFailed(RuntimeError):
    """A run failed at run time (e.g. a non-finite loss); the run dir records the diagnosis."""


def unknown_choice(field: str, value: str, choices: Iterable[str]) -> ConfigError:
    """Build the standard error for an unknown registry name."""
    return ConfigError(field, f"unknown value {value!r}", choices)
