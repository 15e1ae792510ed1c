"""What one invocation measures with: paths, targets, the `--quick` overrides, and `Bench`,
the command line's settings resolved once (so no section reads `argparse` values)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
DEFAULT_README = ROOT / "benchmarks" / "README.md"
TARGETS = {
    "overhead_ratio": 1.05,
    "first_load_s": 10.0,
    "cached_load_s": 1.0,
    "pruning_epochs": 0.6,  # epochs spent with median pruning / without
}
#: Overrides that shrink every config to seconds (`--quick`, for the test suite).
QUICK = (
    "data.num_words=64",
    "data.seq_len=16",
    "model.embedding_dim=8",
    "model.attention.output_dim=8",
    "train.batch_size=32",
    "train.learning_rate=0.01",
    # each run's figures (~1 s of CPU) and the best model are not what --quick checks
    "tracking.log_figures=false",
    "tracking.log_models=none",
)


@dataclass(frozen=True)
class Bench:
    """The shared settings of one invocation: data, scratch space, sizes per section.

    `--quick` (the test suite's tiny slice) turns every repeat count to 1, every epoch count
    to `--epochs` (or 1) and every data limit off, whatever the section's own option says."""

    data: Path
    work: Path
    quick: bool = False
    epochs: int | None = None  # overhead (None: the base config's) and bucketing (None: 2)
    limit: int | None = None  # data.limit of overhead, pipeline and bucketing
    repeats: int = 2
    pipeline_epochs: int = 2
    pipeline_repeats: int = 2
    sweep_epochs: int = 1
    dim_limit: int | None = None
    search_epochs: int = 3
    search_limit: int | None = 5000  # None: all the data
    pruning_trials: int = 20
    pruning_epochs: int = 6
    pruning_limit: int | None = 5000
    sweep_timeout: float = 1200.0
    xla: bool = False
    seq_lens: tuple[int, ...] = (64, 512, 800)

    @classmethod
    def from_args(cls, args: argparse.Namespace, work: Path) -> Bench:
        """The command line's values, with `--quick`'s sizes applied."""
        quick_epochs = args.epochs or 1
        chosen = tuple(int(n) for n in args.seq_lens.split(",")) if args.seq_lens else None
        return cls(
            data=Path(args.data).expanduser().resolve(),
            work=work,
            quick=args.quick,
            epochs=args.epochs,
            limit=args.limit,
            repeats=1 if args.quick else args.repeats,
            pipeline_epochs=quick_epochs if args.quick else args.pipeline_epochs,
            pipeline_repeats=1 if args.quick else args.pipeline_repeats,
            sweep_epochs=quick_epochs if args.quick else args.sweep_epochs,
            dim_limit=None if args.quick else args.dim_limit,
            search_epochs=quick_epochs if args.quick else args.search_epochs,
            search_limit=None if args.quick else args.search_limit,
            pruning_trials=3 if args.quick else args.pruning_trials,
            pruning_epochs=2 if args.quick else args.pruning_epochs,
            pruning_limit=None if args.quick else args.pruning_limit,
            sweep_timeout=args.sweep_timeout,
            xla=args.xla,
            seq_lens=(16,) if args.quick else chosen or (64, 512, 800),
        )

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    def quick_limit(self) -> list[str]:
        """A small slice for warm-up runs (the `--quick` data is small already)."""
        return [] if self.quick else ["data.limit=400"]

    def store(self, name: str) -> list[str]:
        """Overrides that keep a run's MLflow store and sweep state under the scratch dir."""
        where = self.work / name
        return [
            f"tracking.uri=sqlite:///{where / 'mlflow.db'}",
            f"tracking.artifact_root={where / 'artifacts'}",
            f"sweep.dir={where / 'sweeps'}",
        ]

    def overrides(self, *extra: str) -> list[str]:
        """The data, cache and quiet settings every config here shares, then `extra`."""
        return [
            f"data.path={self.data}",
            f"data.cache_dir={self.cache}",
            "train.verbose=0",
            *(QUICK if self.quick else ()),
            *extra,
        ]
