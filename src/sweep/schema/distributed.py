"""The `distributed` group: a process's role in a sweep shared by several processes, and the
oracle's shared secret (from the environment or a file: never the config, which is logged)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from sweep.errors import NO_VALUE, ConfigError
from sweep.schema.rules import NAME_PATTERN, bounds


@dataclass
class DistributedConfig:
    # none: one process runs the sweep; chief: serves trials (trains none); worker: trains them
    role: str = field(default="none", metadata=bounds(choices=("none", "chief", "worker")))
    # the chief's Keras Tuner oracle, HOST:PORT: the chief binds it, workers connect to it
    oracle: str | None = None
    # a worker's unique, stable id: restarted with the same id, it takes its trial back
    worker_id: str | None = None
    # how long a worker waits for the chief's oracle and parent run before giving up
    connect_timeout_s: float = field(default=600.0, metadata=bounds(gt=0.0))
    # TensorFlow threads for this process (null: TensorFlow's choice; sweep.workers: cores / N)
    threads: int | None = field(default=None, metadata=bounds(ge=1))
    # sweep.workers: how often a worker that died is restarted (it then retries its trial)
    max_restarts: int = field(default=3, metadata=bounds(ge=0))
    # a worker silent this long loses its trial: its run is KILLED, the trial queued again
    heartbeat_timeout_s: float = field(default=60.0, metadata=bounds(ge=1.0))
    # a live worker whose trial makes no progress this long (no batch, validation batch, model
    # tracing or upload) loses it the same way; null: never
    progress_timeout_s: float | None = field(default=600.0, metadata=bounds(ge=1.0))
    # how often one trial may lose its worker that way before it counts as FAILED
    max_requeues: int = field(default=3, metadata=bounds(ge=0))
    # never set, refused if it is (the config is logged): the oracle's token comes from the
    # SWEEP_ORACLE_TOKEN environment variable or from token_file
    token: str | None = None
    # a file holding the oracle's token (stripped); null: the SWEEP_ORACLE_TOKEN variable
    token_file: str | None = None
    # the chief's TLS certificate and private key (PEM files): it serves the oracle over TLS
    tls_cert: str | None = None
    tls_key: str | None = None
    # a worker's CA certificate (PEM) that signed the chief's: it calls the oracle over TLS
    tls_ca: str | None = None


CHIEF_WORD = "chief"
#: Where a local server binds unless told otherwise: never beyond this machine.
LOOPBACK = "127.0.0.1"
#: Host names that reach only this machine.
LOCAL_HOSTS = (LOOPBACK, "localhost", "::1")
#: The environment variable that holds the oracle's shared secret (unless token_file is set).
TOKEN_ENV = "SWEEP_ORACLE_TOKEN"
#: Shortest token accepted: a guessable secret protects nothing.
MIN_TOKEN_CHARS = 16
#: Where a token goes, as every message about one says.
TOKEN_SOURCES = f"the {TOKEN_ENV} environment variable or a file named by distributed.token_file"


def oracle_token(dist: DictConfig) -> str | None:
    """The oracle's shared secret: the content of `distributed.token_file` (stripped), else
    $SWEEP_ORACLE_TOKEN; None without either. No message shows it."""
    path = dist.get("token_file")
    if path:
        source = "distributed.token_file"
        try:
            token = Path(str(path)).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(source, path, f"cannot read it ({err})") from None
    else:
        source, token = TOKEN_ENV, os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
        raise ConfigError(
            source,
            NO_VALUE,
            f"the oracle's token must be at least {MIN_TOKEN_CHARS} printable ASCII characters "
            "(make one: python -c 'import secrets; print(secrets.token_urlsafe())')",
        )
    return token


def check_distributed(cfg: DictConfig) -> None:
    """Roles need an oracle address and a sweep (a shared tracking server: `config`); worker
    ids must be usable; an oracle beyond this machine needs a token, which is never a config
    value."""
    dist, workers = cfg.get("distributed"), cfg.sweep.get("workers", 0)
    if dist is None:
        return
    if dist.get("token") is not None:  # the value is not shown: it is meant to be a secret
        raise ConfigError(
            "distributed.token",
            NO_VALUE,
            "is never read from the config or command line (both are logged): put the "
            f"oracle's token in {TOKEN_SOURCES}",
        )
    if workers and dist.role != "none":
        raise ConfigError(
            "sweep.workers", workers, "starts its own chief and workers; drop distributed.role"
        )
    if dist.role == "none":
        return
    host, _, port = str(dist.oracle or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("distributed.oracle", dist.oracle, "expected HOST:PORT of the chief")
    if dist.role == "worker":
        worker = str(dist.worker_id or "")
        if not NAME_PATTERN.match(worker) or CHIEF_WORD in worker.lower():
            raise ConfigError(
                "distributed.worker_id",
                dist.worker_id,
                "each worker needs its own id (letters, digits, '_', '-', '.'; "
                f"not containing '{CHIEF_WORD}')",
            )
    _check_tls(dist)
    if oracle_token(dist) is None and host not in LOCAL_HOSTS:
        raise ConfigError(
            "distributed.oracle",
            dist.oracle,
            f"is beyond this machine and no token guards it: put the oracle's token in "
            f"{TOKEN_SOURCES} (the same for the chief and every worker), or use {LOOPBACK}",
        )


def _check_tls(dist: DictConfig) -> None:
    """The chief's certificate and key come together; the files this role reads exist."""
    if bool(dist.get("tls_cert")) != bool(dist.get("tls_key")):
        given, missing = (
            ("tls_cert", "tls_key") if dist.get("tls_cert") else ("tls_key", "tls_cert")
        )
        raise ConfigError(
            f"distributed.{given}", dist.get(given), f"needs distributed.{missing} too"
        )
    keys = ("tls_cert", "tls_key") if dist.role == "chief" else ("tls_ca",)
    for key in keys:
        path = dist.get(key)
        if path and not Path(str(path)).expanduser().is_file():
            raise ConfigError(f"distributed.{key}", path, "no such file")


def check_single_run(cfg: DictConfig) -> None:
    """A single run has no trials to share out (kept out of `check_values`: the space check
    validates each searched value in a copy of the config without its `search`)."""
    dist = cfg.get("distributed")
    if cfg.sweep.get("workers", 0):
        raise ConfigError("sweep.workers", cfg.sweep.workers, "needs a sweep (+experiment=NAME)")
    if dist is not None and dist.role != "none":
        raise ConfigError("distributed.role", dist.role, "needs a sweep (+experiment=NAME)")
