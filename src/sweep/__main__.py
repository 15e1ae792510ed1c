"""`python -m sweep [+experiment=NAME] [key=value ...]`: one tracked run, or a sweep.

Thin on purpose: the config is composed and checked by `sweep.cli`, then handed to `run`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sweep import cli
from sweep.schema import validate


def run(cfg: DictConfig) -> float:
    """A single run for the base config; a Keras Tuner sweep when an experiment sets `search`."""
    validate(cfg)
    if cfg.search is None:
        from sweep.schema import check_single_run
        from sweep.train import run as train_run

        check_single_run(cfg)

        return train_run(cfg)
    from sweep.tuner import run as sweep_run

    return sweep_run(cfg)


def main() -> None:
    cli.main(run)


if __name__ == "__main__":
    main()
