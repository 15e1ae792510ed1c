"""The sweep: Keras Tuner's oracle picks values, the hypermodel builds and fits, the tuner runs
each trial inside a nested MLflow run.

    hypermodel  one trial's values -> a fitted classifier
    trials      each trial a nested MLflow run; the console line per trial
    oracles     initial points first, time budget, typed failure stop, resumable grid, and a
                chief's bookkeeping of who holds which trial
    liveness    distributed heartbeats, both halves: a worker's proof of life and progress,
                the chief's record of them and verdict on overdue workers
    serving     the chief's server loop: Keras Tuner's servicer, the heartbeat's call, the
                monitor that queues overdue workers' trials again
    tuners      the tuner `search.tuner` names (`build_tuner`)
    initial     `search.initial` resolved
    state       `sweeps/<name>/sweep.json`: resume or refuse a changed sweep
    roles       what a lone process, a distributed chief and a worker do differently
    search      `run`: prepare, search, summarise
"""

from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.initial import initial_points
from sweep.tuner.oracles import ConsecutiveFailures
from sweep.tuner.search import run
from sweep.tuner.state import STATE_FILE, recorded_best
from sweep.tuner.trials import SweepRun, TrialTracking
from sweep.tuner.tuners import build_tuner

__all__ = [
    "STATE_FILE",
    "AttentionHyperModel",
    "ConsecutiveFailures",
    "SweepRun",
    "TrialTracking",
    "build_tuner",
    "initial_points",
    "recorded_best",
    "run",
]
