"""The command line: which sections to run and at what size; results as JSON on stdout (and
`--out`) and as tables in the README."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks.machine import machine
from benchmarks.measure import measure, rounded
from benchmarks.report import report
from benchmarks.sections import SECTIONS
from benchmarks.settings import DEFAULT_DATA, DEFAULT_README, SRC, Bench

log = logging.getLogger(__name__)
#: Loggers whose INFO lines would bury the benchmark's own.
NOISY = ("mlflow", "sweep", "absl", "alembic")


def parser() -> argparse.ArgumentParser:
    """Every option the README's commands use; sizes default to the full benchmark's."""
    p = argparse.ArgumentParser(description=(benchmarks.__doc__ or "").split("\n", 1)[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="aclImdb .tar.gz or directory")
    p.add_argument(
        "--epochs", type=int, default=None, help="overhead epochs (default: the base config's 5)"
    )
    p.add_argument("--limit", type=int, default=None, help="data.limit, overhead and pipeline")
    p.add_argument("--repeats", type=int, default=2, help="paired overhead runs (median)")
    p.add_argument("--pipeline-epochs", type=int, default=2, help="epochs, pipeline section")
    p.add_argument("--pipeline-repeats", type=int, default=2, help="paired pipeline runs")
    p.add_argument("--sweep-epochs", type=int, default=1, help="train.epochs of dim_search")
    p.add_argument("--dim-limit", type=int, default=None, help="data.limit of dim_search")
    p.add_argument("--search-epochs", type=int, default=3, help="max epochs, search section")
    p.add_argument("--search-limit", type=int, default=5000, help="data.limit, search section")
    p.add_argument("--pruning-trials", type=int, default=20, help="trials, pruning section")
    p.add_argument("--pruning-epochs", type=int, default=6, help="epochs, pruning section")
    p.add_argument("--pruning-limit", type=int, default=5000, help="data.limit, pruning section")
    p.add_argument("--sweep-timeout", type=float, default=1200.0, help="seconds per sweep")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--readme", default=str(DEFAULT_README))
    p.add_argument("--work", default=None, help="scratch dir (default: a new temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny models, 1 repeat, 2 trials")
    p.add_argument("--from-json", default=None, help="only rewrite --readme from this JSON")
    p.add_argument("--xla", action="store_true", help="bucketing: also XLA at seq_len 512")
    p.add_argument("--seq-lens", default=None, help="bucketing: e.g. 64,512 (default 64,512,800)")
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated, of: " + ", ".join(SECTIONS)
    )
    return p


def chosen_sections(spec: str) -> list[str]:
    """`--sections`' names in the table's order; an unknown name is an error, not a no-op."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; of: {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in names]


def quiet_logging() -> None:
    """The benchmark's progress on stderr; the harness's and libraries' INFO lines kept out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if str(SRC) not in sys.path:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(SRC))


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen sections, in a scratch dir removed at the end; the machine they ran on."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=args.work) as scratch:
        b = Bench.from_args(args, Path(scratch))
        results: dict[str, Any] = {"machine": machine()}
        for section in chosen_sections(args.sections):
            log.info("section %s ...", section)
            done = measure(lambda run=SECTIONS[section]: run(b))
            results[section] = done.result
            log.info("section %s done in %.0f s", section, done.wall_s)
    results["total_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


def main(
    argv: Sequence[str] | None = None, prog: str = "python benchmarks/run.py"
) -> dict[str, Any]:
    """Measure (or, with `--from-json`, only re-render an earlier run), print the JSON, write
    `--out` and the README blocks. `prog`: how the README quotes the command."""
    args = parser().parse_args(argv)
    if args.from_json:  # re-render the tables of an earlier run; nothing is measured
        results = json.loads(Path(args.from_json).read_text())
        report(results, Path(args.readme))
        return results
    chosen_sections(args.sections)  # a typo fails before minutes of measuring
    quiet_logging()
    results = measure_all(args)
    shown = list(argv if argv is not None else sys.argv[1:])
    results["command"] = " ".join([prog, *shown])
    results = rounded(results)
    text = json.dumps(results, indent=1)
    print(text)  # the result, on stdout: progress went to stderr
    if args.out:
        Path(args.out).write_text(text + "\n")
    report(results, Path(args.readme))
    return results
