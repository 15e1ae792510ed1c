"""What a user can fix, as types: every such error is a `UserError`, whose message is one line
naming the bad key, value or file. The command line reports a `UserError` in that one line and
exits with `USER_ERROR_EXIT`; anything else is a bug and keeps its traceback.

The leaf of the package: it imports nothing from `sweep`, so every module may raise these.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Exit code of every command for a user error (bad config, data, sweep): not worth a retry.
USER_ERROR_EXIT = 2


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


#: A ConfigError's value when there is none to show (a key that does not exist, a removal).
NO_VALUE: Any = _NoValue()


def first_line(err: BaseException | str) -> str:
    """An error's first non-blank line, at most 300 characters: what a one-line message can
    carry of a library's (often multi-line) text."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    return " ".join(lines[0].split())[:300]


class UserError(Exception):
    """An error the user can fix; its message is one line that says what to fix."""


class ConfigError(UserError, ValueError):
    """A bad config value, reported as one line naming the key and the value."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        shown = key if value is NO_VALUE else f"{key}={show(value)}"
        super().__init__(f"config error: {shown}: {reason}")


class DataError(UserError):
    """A data problem (missing archive, wrong layout, unreadable file); says what to fix."""


class SweepError(UserError, RuntimeError):
    """A sweep that cannot start or go on (changed settings, lost server, no chief)."""


class ExportError(UserError, RuntimeError):
    """Nothing to export (no store, no sweep, no finished trial); the message says why."""


def show(value: Any) -> str:
    """A config value as the user wrote it (an empty string shows as '')."""
    if isinstance(value, DictConfig | dict):
        return str(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)
    return repr(value) if isinstance(value, str) and value == "" else str(value)


class ReportError(UserError, RuntimeError):
    """No answer page to write (empty store, unknown experiment, bases that cannot be pooled)."""
