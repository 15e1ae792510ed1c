"""`python -m benchmarks.soak [OPTIONS]`: one chaos soak of a distributed sweep; its ledger
printed and written as JSON. Exit 0 when every trial is accounted for (nothing lost, duplicated,
left RUNNING or failed by a fault; MLflow agrees with the oracle) and the sweep finished."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.soak.faults import KINDS
from benchmarks.soak.ledger import render
from benchmarks.soak.runner import DEFAULT_DATA, Result, Settings, soak

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--trials", type=int, default=200, help="search.max_trials (%(default)s)")
    p.add_argument("--workers", type=int, default=6, help="workers, K (%(default)s)")
    p.add_argument("--faults", type=int, default=50, help="faults at most (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the plan's and each fault's choices")
    p.add_argument("--heartbeat-s", type=float, default=20.0, help="heartbeat timeout")
    p.add_argument("--min-gap-s", type=float, default=15.0, help="least wait between faults")
    p.add_argument("--max-gap-s", type=float, default=45.0, help="longest wait between faults")
    p.add_argument("--max-minutes", type=float, default=180.0, help="the soak's time bound")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="aclImdb .tar.gz or directory")
    p.add_argument("--limit", type=int, default=400, help="data.limit (0: all the data)")
    p.add_argument("--kinds", default=",".join(KINDS), help="fault kinds, comma-separated")
    p.add_argument("--sqlite", action="store_true", help="a SQLite store, not PostgreSQL")
    p.add_argument("--server-workers", type=int, default=2, help="MLflow server processes")
    p.add_argument("--work", default=None, help="keep everything here (default: a temp dir)")
    p.add_argument("--out", default="soak.json", help="the ledger as JSON (%(default)s)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override for every sweep process (repeatable)",
    )
    return p


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(
        trials=args.trials,
        workers=args.workers,
        faults=args.faults,
        seed=args.seed,
        heartbeat_s=args.heartbeat_s,
        min_gap_s=args.min_gap_s,
        max_gap_s=args.max_gap_s,
        max_minutes=args.max_minutes,
        data=Path(args.data),
        limit=args.limit or None,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        postgres=not args.sqlite,
        server_workers=args.server_workers,
        work=Path(args.work) if args.work else None,
        overrides=tuple(args.override),
    )


def as_json(result: Result, command: str) -> dict[str, Any]:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result.settings).items()}
    record = result.record
    return {
        "command": command,
        "settings": settings,
        "seconds": round(result.seconds, 1),
        **result.ledger.to_json(),
        # what the ledger was checked on, to check it again
        "record": {
            "parents": record.parents,
            "runs": [asdict(r) for r in record.runs],
            "oracle": {k: asdict(t) for k, t in record.oracle.items()},
        },
    }


def _stop(signum: int, frame: object) -> None:
    """SIGTERM ends the soak as Ctrl-C does: every process it started is stopped first."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "sweep", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)
    # importing MLflow's server app (to add the sweep's user) warns about Starlette's future
    warnings.filterwarnings("ignore", message=r".*starlette\.middleware\.wsgi is deprecated")
    try:
        settings = settings_of(args)
        settings.plan()
    except ValueError as err:
        print(f"soak: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "benchmarks.soak", *(argv or sys.argv[1:])])
    result = soak(settings)
    for line in render(result.ledger):
        print(line)
    Path(args.out).write_text(json.dumps(as_json(result, command), indent=1) + "\n")
    print(f"{result.seconds / 60:.1f} min; ledger written to {args.out}")
    return 0 if result.ledger.clean and result.ledger.complete else 1


if __name__ == "__main__":
    sys.exit(main())
