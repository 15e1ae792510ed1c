"""A quiet console: TensorFlow's C++ start-up lines kept off stderr, unless asked for.

`TF_CPP_MIN_LOG_LEVEL` (TensorFlow's own switch; `sweep/__init__.py` defaults it to 3, or to 0
with `hydra.verbose=...` on the command line) filters what TensorFlow logs once it runs. It
cannot filter the lines its libraries log while they load, before absl logging is initialised:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795965528.180249   13493 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1795965528.180562   13493 cudart_stub.cc:31] Could not find cuda drivers ...

So the first `import tensorflow` (whoever imports it: keras, keras_tuner, this package) runs
with file descriptor 2 held in a temporary file; afterwards everything written there is passed
on except such absl-format lines below the level, and the banner. Nothing else is dropped, but
for TensorFlow's warning that tf.function retraced: every trial is a new model, so it does.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.machinery import ModuleSpec
from types import ModuleType

#: absl's pre-initialisation line: severity letter, date (0000 before init), time, thread, file.
ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s\]]+:\d+\] ")
#: What absl prints once before the first of those lines.
ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
#: TF_CPP_MIN_LOG_LEVEL's scale: a line is shown when its severity is at least the level.
SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def verbose_requested(argv: Sequence[str]) -> bool:
    """Whether the command line turns on Hydra's debug logging (`hydra.verbose=true`, or a
    logger name or list): then TensorFlow's lines are wanted too."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "hydra.verbose":
            return value.strip().lower() not in ("", "false", "null", "[]")
    return False


def min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def is_startup_noise(line: str, level: int) -> bool:
    """A TensorFlow start-up line that `TF_CPP_MIN_LOG_LEVEL=level` would have filtered."""
    if level <= 0:
        return False
    if line.startswith(ABSL_BANNER):
        return True
    match = ABSL_LINE.match(line)
    return match is not None and SEVERITY[match.group(1)] < level


@contextmanager
def held_stderr(level: int) -> Iterator[None]:
    """Hold what anything (C++ included) writes to fd 2 inside the block; then pass it on,
    less the start-up lines below `level`."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        _flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            kept = "".join(
                line for line in text.splitlines(keepends=True) if not is_startup_noise(line, level)
            )
            if kept:
                os.write(2, kept.encode())


def _flush() -> None:
    if sys.stderr is not None:
        with suppress(OSError, ValueError):
            sys.stderr.flush()


def _no_retracing_warning(record: logging.LogRecord) -> bool:
    """TensorFlow's "N out of the last M calls ... triggered tf.function retracing": a sweep
    builds a new model for every trial, so it retraces by design; nothing to act on."""
    return "triggered tf.function retracing" not in record.getMessage()


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Runs the first import of `tensorflow` inside `held_stderr`, and is gone after it."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        level = min_level()
        if level <= 0:
            return None  # the usual finders import it, every line shown
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quietly(module: ModuleType) -> None:
            with held_stderr(level):
                exec_module(module)
            logging.getLogger("tensorflow").addFilter(_no_retracing_warning)

        spec.loader.exec_module = quietly  # type: ignore[method-assign]
        return spec


def hold_tensorflow_startup() -> None:
    """Keep TensorFlow's load-time lines off stderr, per `TF_CPP_MIN_LOG_LEVEL` (read at import
    time). Nothing to do once TensorFlow is imported, or when the hook is already in place."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlow())
