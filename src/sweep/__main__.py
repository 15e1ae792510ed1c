"""`python -m sweep [+experiment=NAME] [key=value ...]`: one tracked run, or a sweep.

Thin on purpose: compose and check the config, then hand it to `run`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from sweep.config import CONF_DIR, check_command_line
from sweep.schema import ConfigError, register, validate


def run(cfg: DictConfig) -> float:
    """A single run for the base config; a Keras Tuner sweep when an experiment sets `search`."""
    validate(cfg)
    if cfg.search is None:
        from sweep.train import run as train_run

        return train_run(cfg)
    from sweep.tuner import run as sweep_run

    return sweep_run(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from sweep.data import DataError
    from sweep.tuner import SweepError

    try:
        return run(cfg)
    except (ConfigError, DataError, SweepError) as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(2)


def main() -> None:
    """Reject bad input in one line, before any job trains; then let Hydra run the job(s)."""
    register()
    try:
        check_command_line(sys.argv[1:])
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
