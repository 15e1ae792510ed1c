"""The command-line shell around Hydra: bad input is one line on stderr and exit code 2,
reported before any job reads data or trains."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig

from sweep.config import (
    CONF_DIR,
    apply_space_overrides,
    check_command_line,
    split_space_overrides,
)
from sweep.errors import ConfigError, UserError
from sweep.interrupt import INTERRUPTED
from sweep.schema import register


def fail(err: BaseException) -> NoReturn:
    sys.stderr.write(f"{err}\n")
    sys.exit(2)


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: remembered for `train.StopOnInterrupt`, then raised as Python would."""
    INTERRUPTED.set()
    signal.default_int_handler(signum, frame)


def main(task: Callable[[DictConfig], Any], trains: bool = True) -> None:
    """Check the whole command line, then let Hydra compose and run `task` (once per job).
    `trains=False`: `task` neither trains nor searches with this config, so Keras and Keras
    Tuner need not judge it (importing either loads TensorFlow: ~4 s of CPU)."""
    register()
    try:
        check_command_line(sys.argv[1:], trains)
        # search space overrides have dotted paths in their keys, which Hydra cannot address:
        # each job applies them itself
        sys.argv[1:], space_edits = split_space_overrides(sys.argv[1:])
    except ConfigError as err:
        fail(err)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def job(cfg: DictConfig) -> Any:
        signal.signal(signal.SIGINT, _interrupt)
        try:
            return task(apply_space_overrides(cfg, space_edits))
        except UserError as err:
            fail(err)
        except KeyboardInterrupt:
            sys.stderr.write(
                "interrupted: the running trial is marked KILLED; re-run the same "
                "command to resume\n"
            )
            sys.exit(130)

    job()
