"""The `tracking` group: the MLflow store a sweep logs to."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.schema.rules import bounds


@dataclass
class TrackingConfig:
    # MLflow tracking URI: SQLite by default, or http://host:port for a server
    uri: str = "sqlite:///mlruns/mlflow.db"
    # where new experiments keep their artifacts (a local directory or a URI)
    artifact_root: str = "mlruns/artifacts"
    # which trained models to log: best (per sweep; the single run counts as best), all, none
    log_models: str = field(default="best", metadata=bounds(choices=("best", "all", "none")))
    # each run's learning curves and attention heatmap (PNG artifacts: ~1 s of CPU a run)
    log_figures: bool = True
