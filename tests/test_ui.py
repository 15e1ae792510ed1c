"""The MLflow UI shows a sweep: real server on loopback, real headless Chromium."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import tracking
from sweep.__main__ import run as command
from sweep.distributed import free_port
from sweep.vocabulary import NOTE_TAG
from tests.conftest import Servers

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
    assert command[command.index("--workers") + 1] == "1"  # MLflow's default starts four


@pytest.fixture
def mlflow_ui(servers: Servers) -> Callable[[str], str]:
    """Start the README's `mlflow ui` command for a store on a free loopback port."""

    def start(store_uri: str) -> str:
        port = free_port()
        command = [str(Path(sys.executable).parent / "mlflow"), *documented_ui_command()[1:]]
        command[command.index("--backend-store-uri") + 1] = store_uri
        url = f"http://127.0.0.1:{port}"
        # MLflow's job runner (a dozen processes for GenAI jobs) has nothing to show here
        quiet = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        servers.start([*command, "--port", str(port)], f"{url}/health", "mlflow-ui", quiet)
        return url

    return start


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_a_new_user_finds_the_answer_in_the_mlflow_ui(
    make_sweep: Callable[..., DictConfig],
    mlflow_ui: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """From the UI's root URL (click the experiment, then its standing's link) and from the link
    the command prints, by links alone, no switch or setting touched: the sweep's standing, and
    its trials best first with the best score."""
    from playwright.sync_api import Page, sync_playwright

    # two trials that score apart on the tiny data (0.65 and 0.625)
    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=2", "train.learning_rate=0.005")
    command(cfg)  # what `python -m sweep` runs
    printed = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.name)
    trials = client.search_runs(
        [experiment.experiment_id],
        "tags.trial_id != ''",
        order_by=["metrics.best_val_accuracy DESC"],
    )
    assert len(trials) == 2
    best = trials[0]
    best_value = best.data.metrics["best_val_accuracy"]
    assert best_value > trials[1].data.metrics["best_val_accuracy"]
    route = f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    board = f"{route}&viewStateShareKey=leaderboard"
    assert printed == f"{tracking.LOCAL_UI}/{board}"
    headline = f"Best val_accuracy {best_value:.4f}: {best.info.run_name} (output_dim="
    note = experiment.tags[NOTE_TAG].splitlines()[0]
    assert note.startswith(headline) and note.endswith(f"[All trials, best first]({board})")
    url = mlflow_ui(cfg.tracking.uri)
    ARTIFACTS.mkdir(exist_ok=True)

    def shows_the_trials_best_first(page: Page, screenshot: str) -> None:
        page.get_by_text(headline).first.wait_for(timeout=60_000)  # the description
        first = page.locator('[role="row"][row-index="0"]')  # pinned name, then the values
        first.filter(has_text=best.info.run_name).first.wait_for(timeout=60_000)
        shown = " ".join(first.all_inner_texts())
        assert repr(best_value) in shown, f"{best_value!r} not in the first row: {shown!r}"
        second = " ".join(page.locator('[role="row"][row-index="1"]').all_inner_texts())
        assert trials[1].info.run_name in second
        page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1600, "height": 1000})  # new profile
        page = context.new_page()
        # the UI's root URL: the home page lists the experiment, its standing as its description
        page.goto(f"{url}/", wait_until="load")
        listed = page.get_by_role("row").filter(has_text=cfg.name).first
        listed.wait_for(timeout=60_000)
        assert headline in listed.inner_text()
        page.screenshot(path=str(ARTIFACTS / "mlflow-home.png"), full_page=True)
        page.get_by_role("link", name=cfg.name, exact=True).first.click()  # the experiment
        # MLflow (3.10 on) lands a new browser on its GenAI overview, whatever the experiment's
        # type; the standing heads every page of the experiment: the best trial's val_accuracy
        # and a link to all trials, best first, which opens the runs table
        page.wait_for_url(f"**/#/experiments/{experiment.experiment_id}/**")
        page.get_by_text(headline).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-experiment-opened.png"), full_page=True)
        # GenAI's first-visit tip, whenever it shows, covers the page until dismissed
        page.add_locator_handler(page.get_by_role("button", name="Got it"), lambda tip: tip.click())
        with context.expect_page() as opened:  # description links open a new tab
            page.get_by_role("link", name="All trials, best first").first.click()
        board_page = opened.value
        board_page.wait_for_url(f"**/#/experiments/{experiment.experiment_id}/runs**")
        shows_the_trials_best_first(board_page, "mlflow-experiment.png")

        # the link the command printed, served here, in a new profile
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url + printed.removeprefix(tracking.LOCAL_UI), wait_until="load")
        shows_the_trials_best_first(page, "mlflow-printed-link.png")

        for trial in trials:  # each trial's own page in the experiment: name and val_accuracy
            page.goto(
                f"{url}/#/experiments/{experiment.experiment_id}/runs/{trial.info.run_id}",
                wait_until="load",
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
