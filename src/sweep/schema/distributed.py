"""The `distributed` group: a process's role in a sweep shared by several processes."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from sweep.errors import ConfigError
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
    # how often one trial may lose its worker that way before it counts as FAILED
    max_requeues: int = field(default=3, metadata=bounds(ge=0))


CHIEF_WORD = "chief"


def check_distributed(cfg: DictConfig) -> None:
    """Roles need an oracle address and a sweep (a shared tracking server: `config`); worker
    ids must be usable."""
    dist, workers = cfg.get("distributed"), cfg.sweep.get("workers", 0)
    if dist is None:
        return
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


def check_single_run(cfg: DictConfig) -> None:
    """A single run has no trials to share out (kept out of `validate`: the space check
    validates each searched value in a copy of the config without its `search`)."""
    dist = cfg.get("distributed")
    if cfg.sweep.get("workers", 0):
        raise ConfigError("sweep.workers", cfg.sweep.workers, "needs a sweep (+experiment=NAME)")
    if dist is not None and dist.role != "none":
        raise ConfigError("distributed.role", dist.role, "needs a sweep (+experiment=NAME)")
