"""Distributed sweeps on Keras Tuner's own chief/worker engine, logged to one MLflow server.

Above the tuner: a tuner process's role itself is `sweep.cluster`'s. This package starts MLflow
tracking servers (`server`, behind `scripts/mlflow-server`) and runs local parallel mode
(`sweep.workers=N`, `launcher`): a chief and N workers as processes on this machine (`child`),
behind a local tracking server when the store is SQLite.

    python -m sweep.distributed serve [--port 5000 ...]   # a tracking server (the script)
    python -m sweep.distributed child CONFIG KEY=VALUE... # one process of local parallel mode

Only the server is imported here: `serve` starts without loading TensorFlow, which `launcher`
and `child` (they run the tuner) import.
"""

from sweep.distributed.server import (
    SERVER_START_S,
    TrackingServer,
    free_port,
    local_store_uri,
    server_command,
    server_env,
    start_server,
)

__all__ = [
    "SERVER_START_S",
    "TrackingServer",
    "free_port",
    "local_store_uri",
    "server_command",
    "server_env",
    "start_server",
]
