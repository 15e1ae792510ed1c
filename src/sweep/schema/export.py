"""The `export` and `report` groups: what is written from a finished sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.errors import ConfigError
from sweep.schema.rules import bounds


@dataclass
class ExportConfig:
    # how many of the best configurations to write as runnable Hydra configs
    top_k: int = field(default=3, metadata=bounds(ge=1))
    # retrain the best configuration on the whole training split, evaluate once on test
    evaluate: bool = False
    # > 1: the final model averages the top this-many configurations' probabilities, each
    # retrained on the whole training split, and that average is what is tested once
    ensemble: int = field(default=1, metadata=bounds(ge=1))
    # model registry name for that final model (default: attention-sweep-<name>)
    registered_model: str | None = None
    # the sweep's parent run to export (default: the newest sweep of this experiment)
    parent_run_id: str | None = None


def check_export(export: ExportConfig) -> None:
    """The export settings no single field's bounds can judge."""
    if export.ensemble > export.top_k:
        raise ConfigError(
            "export.ensemble",
            export.ensemble,
            f"is more than export.top_k={export.top_k}: its members are the exported "
            "top configurations (raise export.top_k)",
        )


@dataclass
class ReportConfig:
    experiments: list[str] = field(default_factory=list)  # to pool; default: every sweep
    dir: str = "reports"  # the page and its figures
    experiment: str = "answers"  # the MLflow experiment the page is logged to
    # a markdown file (README.md) whose block between the lines `<!-- answer:start -->` and
    # `<!-- answer:end -->` is replaced by the page's headline, dated, with a link to the page
    readme: str | None = None
    alpha: float = field(default=0.05, metadata=bounds(gt=0.0, lt=1.0))
    margin: float = field(default=0.01, metadata=bounds(gt=0.0))
    # the practical floor of attention_entropy and attention_saturation (both 0..1)
    diagnostic_margin: float = field(default=0.01, metadata=bounds(gt=0.0))
