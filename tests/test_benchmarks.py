"""The benchmark script runs end to end on a tiny slice; no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, run_cli

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("machine", "data", "overhead", "pipeline", "sweeps", "search", "bucketing", "pruning")


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_slice(
    tmp_path: Path, tiny_imdb: Path, cli_env: dict[str, str]
) -> None:
    out, readme = tmp_path / "results.json", tmp_path / "README.md"
    readme.write_text(
        "# Benchmarks\n\nKept.\n\n<!-- results:start -->\nstale results\n<!-- results:end -->\n"
    )
    result = subprocess.run(
        [
            PYTHON,
            str(ROOT / "benchmarks" / "run.py"),
            f"--data={tiny_imdb}",
            "--epochs=1",
            "--quick",
            "--xla",
            f"--out={out}",
            f"--readme={readme}",
            f"--work={tmp_path}",
        ],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert json.loads(result.stdout) == results
    assert set(SECTIONS) <= set(results)

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

    # the package's own entry point re-renders the same tables from the JSON, measuring nothing
    rerendered = run_cli(
        [f"--from-json={out}", f"--readme={readme}"], ROOT, cli_env, module="benchmarks", timeout=60
    )
    assert rerendered.returncode == 0, rerendered.stderr[-3000:]
    assert readme.read_text() == text


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
