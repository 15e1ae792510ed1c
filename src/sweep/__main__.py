"""`python -m sweep [+experiment=NAME] [key=value ...]`: one tracked run, or a sweep.

Thin on purpose: the config is composed and checked by `sweep.cli`, then handed to `run`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sweep import cli
from sweep.config import validate


def run(cfg: DictConfig) -> float:
    """A single run for the base config; a Keras Tuner sweep when an experiment sets `search`."""
    validate(cfg)
    from sweep import tracking

    if cfg.search is None:
        from sweep.schema import check_single_run
        from sweep.train import run as train_run

        check_single_run(cfg)

        best = train_run(cfg)
        tracking.show_runs_page(cfg)  # the last line: where to see it
        return best
    from sweep.tuner import run as sweep_run

    best = sweep_run(cfg)
    tracking.show_runs_page(cfg, view=tracking.LEADERBOARD_VIEW)
    return best


def main() -> None:
    cli.main(run)


if __name__ == "__main__":
    main()
