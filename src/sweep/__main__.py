"""`python -m sweep [+experiment=NAME] [key=value ...]`: one tracked run, or a sweep.

Thin on purpose: the config is composed and checked by `sweep.cli`, then handed to `run`.
TensorFlow loads only once the command line is checked: a refused one is answered in about a
second, not after TensorFlow's start-up.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sweep import cli
from sweep.config import check_config
from sweep.data.sources import resolve_source
from sweep.schema import check_single_run


def run(cfg: DictConfig) -> float:
    """A single run for the base config; a Keras Tuner sweep when an experiment sets `search`:
    in this process (or as one role of a distributed sweep), or, with `sweep.workers=N`, as a
    chief and N workers started here."""
    searched = check_config(cfg)
    if cfg.data.source != "keras":  # a data.path that is not there: also before TensorFlow
        resolve_source(cfg.data.source, cfg.data.path)
    from sweep import tracking  # here: after the checks, as the training modules below

    if searched is None:
        check_single_run(cfg)
        from sweep import train  # here: after the checks (above)

        best = train.run(cfg)
        tracking.show_runs_page(cfg)  # the last line: where to see it
        return best
    # sweep.workers=N: a chief and N workers started here (the schema refuses it with a role)
    from sweep import tuner
    from sweep.distributed.launcher import launch

    best = launch(cfg) if cfg.sweep.workers else tuner.run(cfg, searched)
    tracking.show_runs_page(cfg, view=tracking.LEADERBOARD_VIEW)
    return best


def main() -> None:
    cli.main(run)


if __name__ == "__main__":
    main()
