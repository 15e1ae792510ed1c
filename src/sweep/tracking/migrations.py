"""A local SQLite store's schema against this MLflow's: refused when newer, upgraded when older.

MLflow upgrades an older store only when its newer tables are missing, and otherwise refuses it
("out-of-date database schema"); neither keeps a copy. A store the harness upgrades is copied
first, so an upgrade that goes wrong, or a user who must go back to the older MLflow, loses
nothing.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import mlflow.store.db_migrations

from sweep.errors import ConfigError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)


def revision(db_path: Path) -> str | None:
    """The schema revision an existing SQLite store records (None: no file, or not a store)."""
    if not db_path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # not an MLflow store yet, or not SQLite: opening it says why
        return None
    return None if row is None else str(row[0])


def _migrations() -> ScriptDirectory:
    # imported only here, after `store.configure` quietened Alembic's logger (it logs as it loads)
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(mlflow.store.db_migrations.__file__).parent))


def head() -> str:
    """The newest schema revision this MLflow knows."""
    return str(_migrations().get_current_head())


def known(rev: str) -> bool:
    """Whether this MLflow's migrations know `rev` (a newer MLflow's revision it does not)."""
    from alembic.util import CommandError

    try:
        _migrations().get_revision(rev)
    except CommandError:
        return False
    return True


def check_schema(uri: str, db_path: Path) -> None:
    """Refuse a store a newer MLflow wrote (untouched); upgrade one an older MLflow wrote, after
    copying it beside itself (`<name>.<revision>.bak`). Runs under the store's file lock."""
    rev = revision(db_path)
    if rev is None:
        return
    if not known(rev):
        raise ConfigError(
            "tracking.uri",
            uri,
            f"the store was written by a newer MLflow (schema {rev}) than this one "
            f"({mlflow.__version__}); it is left untouched: open it with that MLflow, or give "
            "another tracking.uri",
        )
    newest = head()
    if rev == newest:
        return
    backup = db_path.with_name(f"{db_path.name}.{rev}.bak")
    shutil.copy2(db_path, backup)
    log.warning(
        "upgrading the MLflow store %s from schema %s to %s (MLflow %s); the old one is kept at %s",
        uri,
        rev,
        newest,
        mlflow.__version__,
        backup,
    )
    # MLflow's own documented command (`mlflow db upgrade`), not its private helpers
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or revision(db_path) != newest:
        shutil.copy2(backup, db_path)
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ConfigError(
            "tracking.uri", uri, f"could not upgrade the store ({reason[:160]}); it is restored"
        )
