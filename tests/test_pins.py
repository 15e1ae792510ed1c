"""Keras Tuner internals the sweep relies on (pyproject.toml pins keras-tuner to the tested
minor): a newer Keras Tuner that renames or drops one fails here, naming it, instead of
deep inside a sweep."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief, oracle_client

from sweep.tuner.oracles import (
    ConsecutiveFailures,
    KerasOracle,
    RandomOracle,
    ResumableGridSearchOracle,
)

#: (where, attribute): private methods the sweep's oracles and tuners override or call.
METHODS = [
    (keras_tuner.Oracle, "_check_consecutive_failures"),  # SweepOracle raises a typed error
    (keras_tuner.Oracle, "_retry"),  # SweepOracle retries only trials of silent workers
    (keras_tuner.oracles.GridSearchOracle, "_compare"),  # ResumableGridSearchOracle orders by it
    (keras_tuner.oracles.HyperbandOracle, "_random_values"),  # initial points come first
    (keras_tuner.Tuner, "_populate_initial_space"),  # TrialTracking builds no model up front
    (keras_tuner.Tuner, "_run_and_update_trial"),  # a trial taken from a worker ends quietly
]
#: Instance state of a fresh grid oracle that ResumableGridSearchOracle rebuilds on reload.
GRID_STATE = list(ResumableGridSearchOracle.__annotations__)
#: Oracle state SweepOracle reads and writes, as KerasOracle types it.
ORACLE_STATE = list(KerasOracle.__annotations__)


def _grid() -> keras_tuner.Oracle:
    hp = keras_tuner.HyperParameters()
    hp.Choice("x", [1, 2])
    return keras_tuner.oracles.GridSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), hyperparameters=hp
    )


def test_keras_tuner_is_the_pinned_minor() -> None:
    major, minor = (int(p) for p in keras_tuner.__version__.split(".")[:2])
    assert (major, minor) == (1, 4), (
        f"keras-tuner {keras_tuner.__version__}: sweep.tuner is tested with 1.4 (pyproject.toml "
        "pins >=1.4.7,<1.5); check the internals below before widening the pin"
    )


@pytest.mark.parametrize(("owner", "name"), METHODS, ids=[n for _, n in METHODS])
def test_private_methods_exist(owner: type, name: str) -> None:
    assert callable(getattr(owner, name, None)), (
        f"keras_tuner {keras_tuner.__version__}: {owner.__name__}.{name} is gone; sweep.tuner "
        "overrides it"
    )


def test_grid_oracle_state_exists() -> None:
    grid = _grid()
    missing = [name for name in [*GRID_STATE, *ORACLE_STATE] if not hasattr(grid, name)]
    assert not missing, f"keras_tuner {keras_tuner.__version__}: GridSearchOracle lacks {missing}"
    linked = grid._ordered_ids
    for name in ("insert", "next"):
        assert callable(getattr(linked, name, None)), (
            f"keras_tuner {keras_tuner.__version__}: GridSearchOracle._ordered_ids.{name} is gone"
        )
    assert isinstance(grid._populate_next, list), "GridSearchOracle._populate_next: not a list"


def test_end_trial_still_checks_consecutive_failures(tmp_path: Path) -> None:
    """`Oracle.end_trial` must still call `_check_consecutive_failures`, or the sweep's typed
    stop (`ConsecutiveFailures`) would never be raised."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("x", [1, 2, 3])
    oracle = RandomOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        hyperparameters=hp,
        max_trials=3,
        max_consecutive_failed_trials=1,
    )
    oracle._set_project_dir(str(tmp_path), "pins")
    trial = oracle.create_trial("tuner0")
    trial.status, trial.message = TrialStatus.FAILED, "Traceback ...\nRuntimeError: broken"
    with pytest.raises(ConsecutiveFailures, match="RuntimeError: broken"):
        oracle.end_trial(trial)


def test_the_chiefs_server_parts_exist() -> None:
    """`serving.serve` runs Keras Tuner's servicer itself, and gives a worker's oracle client a
    channel of its own (`stub`)."""
    servicer = getattr(oracle_chief, "OracleServicer", None)
    assert servicer is not None and hasattr(servicer(None), "stop_triggered"), (
        f"keras_tuner {keras_tuner.__version__}: oracle_chief.OracleServicer or its "
        "stop_triggered is gone"
    )
    assert callable(getattr(oracle_chief, "exit_chief", None)), "oracle_chief.exit_chief is gone"
    service = protos.get_service_grpc()
    for name in ("add_OracleServicer_to_server", "OracleStub"):
        assert callable(getattr(service, name, None)), f"keras_tuner's service lacks {name}"
    assert "self.stub = " in inspect.getsource(oracle_client.OracleClient.__init__), (
        "OracleClient no longer keeps its gRPC stub in .stub"
    )


def test_reload_still_queues_the_running_trials_again() -> None:
    """SweepOracle.reload takes a restarted chief's running trials back out of the retry queue
    Keras Tuner's reload puts them in."""
    source = inspect.getsource(keras_tuner.Oracle.reload)
    assert "_retry_queue.append" in source and "ongoing_trials" in source, (
        "Oracle.reload no longer queues the trials that were running again"
    )
