"""The MLflow UI shows a sweep: real server on loopback, real headless Chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep.tuner import run as sweep_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Screenshots land here for CI to keep.
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: Flags Chromium needs as root in a sandbox without network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DIMS = {"model.attention.output_dim": {"type": "choice", "values": [4, 8]}}


def documented_ui_command() -> list[str]:
    """The README's one command that opens the MLflow UI on the project's store."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("mlflow ui "))
    return line.split("#")[0].split()


def test_documented_ui_command_binds_to_loopback() -> None:
    command = documented_ui_command()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:///mlruns/mlflow.db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start the README's `mlflow ui` command for a store on a free loopback port."""
    processes: list[subprocess.Popen] = []

    def start(store_uri: str) -> str:
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "ui",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        log = (tmp_path / "mlflow-ui.log").open("w")
        processes.append(subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow ui did not start: {(tmp_path / 'mlflow-ui.log').read_text()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_mlflow_ui_shows_the_trials_and_their_val_accuracy(
    make_sweep: Callable[..., DictConfig], mlflow_ui: Callable[[str], str]
) -> None:
    from playwright.sync_api import sync_playwright

    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=2")
    sweep_run(cfg)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.name).experiment_id
    trials = client.search_runs([experiment], "tags.trial_id != ''")
    assert len(trials) == 2
    url = mlflow_ui(cfg.tracking.uri)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{url}/#/experiments/{experiment}/runs", wait_until="load")
        page.get_by_text(f"{cfg.name}-sweep").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-experiment.png"), full_page=True)
        for trial in trials:  # each trial's own page in the experiment: name and val_accuracy
            page.goto(
                f"{url}/#/experiments/{experiment}/runs/{trial.info.run_id}", wait_until="load"
            )
            page.get_by_text(trial.info.run_name, exact=True).first.wait_for(timeout=60_000)
            label = page.get_by_text("val_accuracy", exact=True).first
            label.wait_for(timeout=60_000)
            shown = label.evaluate(
                "e => (e.closest('tr') || e.parentElement.parentElement.parentElement).innerText"
            )
            value = trial.data.metrics["val_accuracy"]
            assert repr(value) in shown, f"{trial.info.run_name}: {value} not in {shown!r}"
            page.screenshot(
                path=str(ARTIFACTS / f"mlflow-{trial.info.run_name}.png"), full_page=True
            )
        browser.close()
