"""sweep.tracking's own contracts: a lost server is told by exception type, the package loads
without Keras, and "best" follows the objective's direction."""

from __future__ import annotations

import gzip
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from sweep import tracking
from sweep.errors import ConfigError
from tests.conftest import copy_store


def _refused_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_server_that_stopped_answering_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as caught:
        MlflowClient(_refused_uri()).get_experiment("0")
    assert tracking.unreachable(caught.value)
    assert "MLflow tracking server stopped answering" in tracking.gone_message(caught.value)


def test_unreachable_reads_types_not_text(tmp_path: Path, migrated_store: Path) -> None:
    client = MlflowClient(copy_store(migrated_store, tmp_path))
    with pytest.raises(MlflowException) as caught:
        client.get_run("0" * 32)  # a bad request: the store answered
    assert not tracking.unreachable(caught.value)
    assert not tracking.unreachable(MlflowException("API request to x failed with exception y"))
    try:
        try:
            raise requests.exceptions.ReadTimeout("slow")
        except requests.exceptions.Timeout as err:
            raise MlflowException("timed out") from err
    except MlflowException as wrapped:
        assert tracking.unreachable(wrapped)
    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except requests.exceptions.ConnectionError:
            raise ValueError("unrelated") from None  # said not to be caused by it
    except ValueError as suppressed:
        assert not tracking.unreachable(suppressed)


#: An Alembic revision no MLflow release has (ids are 12 hex digits): a store from the future.
FUTURE_REVISION = "ffffffffffff"


def test_a_store_a_newer_mlflow_wrote_is_refused_in_one_line_and_left_alone(
    tmp_path: Path, migrated_store: Path
) -> None:
    uri = copy_store(migrated_store, tmp_path)
    db = Path(uri.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as store:  # as a later MLflow leaves it: a revision this one lacks
        store.execute(f"UPDATE alembic_version SET version_num = '{FUTURE_REVISION}'")
    before = db.read_bytes()
    settings = OmegaConf.create({"uri": uri, "artifact_root": str(tmp_path / "artifacts")})
    with pytest.raises(ConfigError) as caught:
        tracking.configure(settings)
    assert str(caught.value).startswith(f"config error: tracking.uri={uri}: ")
    assert f"newer MLflow (schema {FUTURE_REVISION})" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert db.read_bytes() == before
    copy_store(migrated_store, tmp_path)  # this MLflow's own schema opens
    tracking.configure(settings)


#: A store MLflow 3.9.0 wrote: the harness's smoke sweep (2 trials, tiny data) at 454551b,
#: the last commit pinned below 3.10 (how: tests/README.md).
STORE_39 = Path(__file__).parent / "fixtures" / "mlflow-3.9.0-store.db.gz"
#: What a store holds that an upgrade must keep, row for row.
KEPT = ("experiments", "experiment_tags", "runs", "params", "tags", "metrics", "latest_metrics")


def columns(db: Path) -> dict[str, list[str]]:
    """The columns of the tables an upgrade must keep, as the store has them now."""
    with sqlite3.connect(db) as store:
        return {t: [c[1] for c in store.execute(f"PRAGMA table_info({t})")] for t in KEPT}


def rows(db: Path, kept: dict[str, list[str]]) -> dict[str, set[tuple]]:
    """Every row of the tables an upgrade must keep, in the columns `kept` names."""
    with sqlite3.connect(db) as store:
        return {t: set(store.execute(f"SELECT {', '.join(c)} FROM {t}")) for t, c in kept.items()}


@pytest.mark.slow  # runs `mlflow db upgrade`, a process
def test_a_store_mlflow_39_wrote_is_upgraded_with_nothing_lost(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(gzip.decompress(STORE_39.read_bytes()))
    original = db.read_bytes()
    kept = columns(db)
    before = rows(db, kept)
    assert sum(map(len, before.values())) > 100  # a real sweep's record, not an empty store
    old_revision = tracking.migrations.revision(db)
    assert old_revision != tracking.migrations.head()
    uri = f"sqlite:///{db}"
    tracking.configure(OmegaConf.create({"uri": uri, "artifact_root": str(tmp_path / "art")}))
    assert tracking.migrations.revision(db) == tracking.migrations.head()
    assert rows(db, kept) == before  # every run, param, tag and metric, unchanged
    backup = db.with_name(f"mlflow.db.{old_revision}.bak")
    assert backup.read_bytes() == original
    finished = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("smoke").experiment_id],
        "tags.trial_id != ''",
    )
    assert len(finished) == 2 and all("best_val_accuracy" in r.data.metrics for r in finished)


def test_importing_tracking_loads_no_keras() -> None:
    code = (
        "import sys, sweep.tracking, sweep.tracking.queries, sweep.tracking.summary; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("direction", "value", "epochs"), [("max", 0.9, 2), ("min", 0.6, 1)])
def test_best_follows_the_direction(
    tmp_path: Path, migrated_store: Path, direction: str, value: float, epochs: int
) -> None:
    history = {"val_loss": [0.6, 0.9, float("nan"), 0.7]}
    assert tracking.best_value(history, "val_loss", direction) == value
    uri = copy_store(migrated_store, tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run("0").info.run_id
    for step, v in enumerate(history["val_loss"][:2]):
        client.log_metric(run_id, "val_loss", v, step=step)
    mlflow.set_tracking_uri(uri)
    assert tracking.best_epochs(run_id, "val_loss", direction) == epochs
