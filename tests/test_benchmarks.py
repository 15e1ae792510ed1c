"""The benchmark script runs end to end on a tiny slice; no timing is asserted.

It measures in this process (its sections fit in-process anyway), and so run its sweeps but
one: `sweep_runs.launch`, a `python -m sweep` process of its own, runs Hyperband's single
trial (so its peak RSS is its own); the other five run the same command here, on copies of
the migrated store, five TensorFlow start-ups and store migrations fewer. Both entry points,
the file and `-m benchmarks`, re-render the README from the JSON in real processes (they load
no TensorFlow).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from benchmarks import cli, sweep_runs
from benchmarks.settings import Bench
from tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("machine", "data", "overhead", "pipeline", "sweeps", "search", "bucketing", "pruning")
#: The sweeps `--quick` runs, in order.
SWEEPS = ("smoke", "dim_search", "search_hyperband", "search_random", "pruning_none")
SWEEPS += ("pruning_median",)
#: The one `sweep_runs.launch` starts as a process of its own: a single trial.
IN_A_PROCESS = "search_hyperband"


def launch_here(b: Bench, label: str, args: Sequence[str], store: Path) -> sweep_runs.Exited:
    """`python -m sweep ARGS` as `sweep_runs.launch` runs it (from the sweep's scratch dir, its
    output in its log file), in this process, on a copy of the migrated `store` (how a sweep
    starts a fresh store is not the benchmark's to test): CPU and peak memory this process's."""
    from sweep.__main__ import run
    from sweep.config import compose_config

    where = b.work / label
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store, where / "mlflow.db")  # where `Bench.store` puts it
    started, cpu = time.perf_counter(), time.process_time()
    with (
        contextlib.chdir(where),
        (where / "output.log").open("w") as out,
        contextlib.redirect_stdout(out),
    ):
        run(compose_config(list(args)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return sweep_runs.Exited(0, wall, cpu, sweep_runs.peak_rss_mb(os.getpid()))


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, migrated_store: Path) -> list[str]:
    """The benchmark's sweeps run here, but `IN_A_PROCESS`, `launch`ed; the labels, in order."""
    real, labels = sweep_runs.launch, []

    def launch(b: Bench, label: str, args: Sequence[str]) -> sweep_runs.Exited:
        labels.append(label)
        if label == IN_A_PROCESS:
            return real(b, label, args)
        return launch_here(b, label, args, migrated_store)

    monkeypatch.setattr(sweep_runs, "launch", launch)
    return labels


@pytest.fixture
def logging_kept() -> Iterator[None]:
    """The benchmark quiets loggers for its run; the tests after it get them back."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in cli.NOISY)]
    levels, handlers = [logger.level for logger in loggers], list(logging.getLogger().handlers)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    logging.getLogger().handlers[:] = handlers


@pytest.mark.slow
@pytest.mark.usefixtures("logging_kept")
def test_benchmark_runs_on_a_tiny_slice(
    tmp_path: Path,
    tiny_imdb: Path,
    cli_env: dict[str, str],
    launched: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, readme = tmp_path / "results.json", tmp_path / "README.md"
    readme.write_text(
        "# Benchmarks\n\nKept.\n\n<!-- results:start -->\nstale results\n<!-- results:end -->\n"
    )
    argv = [f"--data={tiny_imdb}", "--epochs=1", "--quick", "--xla", f"--out={out}"]
    argv += [f"--readme={readme}", f"--work={tmp_path}"]
    with contextlib.chdir(tmp_path):
        results = cli.main(argv)
    assert json.loads(capsys.readouterr().out) == results == json.loads(out.read_text())
    assert set(SECTIONS) <= set(results)
    assert tuple(launched) == SWEEPS
    assert results["command"] == " ".join(["python benchmarks/run.py", *argv])

    data = results["data"]
    assert data["reviews"] == 400  # tiny_imdb: 100 reviews per class and split
    assert data["first_load_s"] > 0 and data["cached_load_s"] > 0

    overhead = results["overhead"]
    assert overhead["ratio"] > 0 and len(overhead["ratio_each"]) == overhead["repeats"] == 1
    for section, kinds in (("overhead", ("bare", "trial")), ("pipeline", ("numpy", "tfdata"))):
        for kind in kinds:
            assert len(results[section][kind]["wall_s"]) == 1, (section, kind)
    assert results["pipeline"]["kept"] in ("numpy", "tfdata")
    assert overhead["cost_logged_complete"]  # duration_s, seconds_per_epoch, param_count
    assert overhead["cost_logged"]["param_count"] > 0

    for name in ("smoke", "dim_search"):
        sweep = results["sweeps"][name]
        assert sweep["finished"] == sweep["trials"] == 2, name
        assert sweep["trials_per_hour"] > 0 and sweep["peak_rss_mb"] > 0, name
    search = results["search"]
    own = search["hyperband"]  # IN_A_PROCESS: `launch` read its process's CPU and peak RSS
    assert own["cpu_s"] > 0 and own["peak_rss_mb"] > 0 and own["wall_s"] >= own["mean_trial_s"]
    for tuner in ("hyperband", "random"):
        assert search[tuner]["finished"] >= 1 and search[tuner]["epochs_run"] >= 1, tuner
        assert math.isfinite(search[tuner]["best_val_accuracy"]), tuner  # NaN: no trial scored

    bucketing = results["bucketing"]["16"]
    assert set(bucketing["s_per_epoch"]) == {"fixed", "bucketed", "bare_fixed", "bucketed_xla"}
    assert bucketing["bucketed_over_fixed"] > 0 and bucketing["fixed_over_bare"] > 0
    assert 0.1 < bucketing["tokens_kept"] < 1.0  # tiny reviews: 11-33 tokens, cut to 16

    text = readme.read_text()
    assert_pruning_section(results["pruning"], text)
    assert "| seq_len | tokens kept by fixed padding |" in text and "| 16 |" in text
    assert text.startswith("# Benchmarks\n\nKept.\n") and "stale results" not in text
    assert "| Benchmark | Measured | Target | Met |" in text
    hyperband, random = search["hyperband"], search["random"]
    assert (
        f"| Hyperband | {hyperband['finished']} | {hyperband['epochs_run']:.0f} | "
        f"{hyperband['best_val_accuracy']:.4f} |" in text
    )
    assert (
        f"| Random search (as many epochs) | {random['finished']} | {random['epochs_run']:.0f} | "
        f"{random['best_val_accuracy']:.4f} |" in text
    )
    assert results["machine"]["cores"] == os.cpu_count()
    assert f"**{os.cpu_count()} cores**" in text
    assert not list(tmp_path.glob("bench-*")), "the scratch dir is removed"

    # the entry points (the file, the package) re-render the same tables from the JSON
    for entry in ([str(ROOT / "benchmarks" / "run.py")], ["-m", "benchmarks"]):
        readme.write_text(text.replace("| Hyperband |", "| stale |"))
        result = run_python([*entry, f"--from-json={out}", f"--readme={readme}"], ROOT, cli_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert readme.read_text() == text, entry


def assert_pruning_section(pruning: dict, text: str) -> None:
    """The same 3 random trials of 2 epochs each, without and with median pruning."""
    for kind in ("none", "median"):
        assert pruning[kind]["finished"] == pruning[kind]["trials"] == 3, kind
        assert len(pruning[kind]["trials_each"]) == 3, kind
    assert pruning["none"]["pruned"] == 0 and pruning["none"]["epochs_run"] == 6  # 3 x 2 epochs
    assert 0 < pruning["median"]["epochs_run"] <= 6
    assert pruning["epochs_ratio"] == pytest.approx(pruning["median"]["epochs_run"] / 6, abs=1e-3)
    rates = [[t["learning_rate"] for t in pruning[k]["trials_each"]] for k in ("none", "median")]
    assert rates[0] == rates[1], "the same seed draws the same trials both ways"
    assert "| search.pruning | Trials | Pruned | Epochs spent |" in text and "| median |" in text
