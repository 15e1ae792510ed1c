"""The names the harness's record is read by, in one place: every MLflow tag it writes or reads,
and which config keys are part of a trial (the rest say how the harness ran it).

A tag written under one spelling and read under another is a record that silently says nothing;
`tests/test_layout.py` checks that no other module spells a tag name itself.
"""

from __future__ import annotations

from collections.abc import Iterable

# -- every run the harness starts (`tracking.standard_tags`): what a reader trusts it by
SEED_TAG = "seed"
FINGERPRINT_TAG = "data_fingerprint"
#: who writes the run: lets a restart tell a crashed run from a live one
HOST_TAG, PID_TAG = "host", "pid"
#: the validation split a run got (movie or random), and how many movies validation holds
VAL_SPLIT_TAG, VAL_MOVIES_TAG = "data.val_split_used", "data.val_movies"
COMMIT_TAG = "git_commit"
#: + a distribution's name (`tracking.PACKAGES`): its version
VERSION_TAG_PREFIX = "version."

# -- a sweep's runs
#: the sweep's name, on its parent run and every trial
SWEEP_TAG = "sweep"
#: MLflow's own: a nested run's parent (a trial's or a repeat's sweep)
PARENT_TAG = "mlflow.parentRunId"
TRIAL_ID_TAG = "trial_id"
#: the config paths a trial searched (their values are its params)
HYPERPARAMETERS_TAG = "hyperparameters"
#: base, best_of=NAME or given: the trial is a `search.initial` point
INITIAL_TAG = "initial"
#: why a run failed
ERROR_TAG = "error"
#: a trial median pruning stopped early, and after how many epochs
PRUNED_TAG, PRUNED_AT_TAG = "pruned", "pruned_at_epoch"
#: a seed repeat (`search.replicates`): the trial run it repeats, and that trial's id
REPLICATE_OF_TAG, REPLICATE_TRIAL_TAG = "replicate_of", "replicate_trial_id"
#: a distributed trial's worker (a restarted worker closes its own leftovers by it)
WORKER_TAG, WORKER_HOST_TAG, WORKER_PID_TAG = "worker_id", "worker_host", "worker_pid"
#: why a run was closed KILLED (taken from a silent worker, superseded)
KILL_REASON_TAG = "kill_reason"

#: a sweep's stage run (not a trial), nested under its parent: the confirmation stage's runs are
#: its children; what it confirms, recorded before it trains anything; each confirmation run's
#: trial run it re-runs, and that configuration's roles
STAGE_TAG, SELECTION_TAG = "sweep_stage", "confirm_selection"
CONFIRM_OF_TAG, CONFIRM_ROLE_TAG = "confirm_of", "confirm_role"

# -- a sweep's parent run
#: a distributed chief's oracle port: how its workers find its parent run
ORACLE_PORT_TAG = "oracle_port"
#: why the search ended
STOP_REASON_TAG = "stop_reason"
BEST_RUN_TAG = "best_run_id"
#: seed repeats: the verdict in words, and why they stopped
VERDICT_TAG, REPLICATES_STOP_TAG = "replicates_verdict", "replicates_stop"
#: MLflow's own: the description the UI shows (of a run, and of an experiment)
NOTE_TAG = "mlflow.note.content"

# -- a final evaluation (`export.evaluate`): its run, and the trial run it retrained
FINAL_TAG, SOURCE_RUN_TAG = "final", "source_run_id"
#: `export.ensemble`: the trial runs (comma-separated, best first) its final model averages
ENSEMBLE_OF_TAG = "ensemble_of"

# -- experiments (MLflow's own)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: + a view's name: a saved view of the runs page
VIEW_TAG_PREFIX = "mlflow.sharedViewState."

#: Config keys (a section, or a dotted key and all below it) that do not change what a trial
#: trains and measures: how the harness stores, shows, shares, schedules and reports it, where
#: the data is read from (the data itself is compared by its fingerprint), and which trials a
#: command runs. A resume may change them; pooling sweeps and a run's params leave them out.
NOT_TRIAL = (
    "name",
    "tracking",
    "sweep",
    "export",
    "distributed",
    "report",
    "data.path",
    "data.cache_dir",
    "train.verbose",
    "search.time_budget",
    "search.initial",
    "search.replicates",  # seed repeats come after the trials and change none of them
    "search.confirm",  # so does the confirmation stage
)
#: Config sections whose keys a search may set; the others shape the harness (and `seed`, the
#: sweep's own, is re-drawn by executions and seed repeats, never searched).
SEARCHABLE = ("data", "model", "train")


def within(key: str, prefixes: Iterable[str]) -> bool:
    """Whether dotted config `key` is one of `prefixes` or lies inside one of them."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def part_of_trial(key: str) -> bool:
    """Whether config `key` changes what a trial trains or measures (see NOT_TRIAL)."""
    return not within(key, NOT_TRIAL)


def in_searchable_section(path: str) -> bool:
    """Whether `path` names a key inside data, model or train: what a space entry is keyed by."""
    return any(path.startswith(f"{section}.") for section in SEARCHABLE)


def searchable(path: str) -> bool:
    """Whether a search space may set `path`: a key of a searchable section that is part of a
    trial (searching where the data is read from, say, would change no trial)."""
    return in_searchable_section(path) and part_of_trial(path)
