"""Links into the MLflow UI, and the saved view of a sweep's trials, best first.

A command ends with the link to its results; a sweep's description links to its leaderboard.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep.objective import Objective
from sweep.tracking.store import store_exists
from sweep.vocabulary import PARENT_TAG, PRUNED_AT_TAG, VIEW_TAG_PREFIX

log = logging.getLogger(__name__)

#: Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"
#: A sweep's own saved view of the runs page (`save_view`).
LEADERBOARD_VIEW = "leaderboard"

#: What `save_view` wrote in this process, by store, experiment and key.
_saved_views: dict[tuple[str, str, str], str] = {}


def runs_page(uri: str, experiment_id: str, view: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs: on the tracking server itself, or for any
    other store where `mlflow ui --backend-store-uri URI --host 127.0.0.1` serves it. The
    `workflowType` parameter shows MLflow 3's model-training navigation rather than GenAI's;
    `view` opens one of the experiment's saved views (`save_view`)."""
    base = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else LOCAL_UI
    return f"{base}/{runs_route(experiment_id, view)}"


def runs_route(experiment_id: str, view: str | None = None) -> str:
    """`runs_page` within the UI: a link that works in a description, whatever the host."""
    route = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{route}&viewStateShareKey={view}" if view else route


def save_view(experiment_id: str, key: str, name: str, state: Mapping[str, Any]) -> None:
    """A saved view of the experiment's runs page (filter, sort, columns), stored as the MLflow
    UI stores one (a JSON `{name, createdAt, updatedAt, state}` whose state is deflated): a
    link with `viewStateShareKey=KEY` opens it. Written once per process and view (a sweep
    refreshes its standing as its trials end)."""
    text = json.dumps(dict(state), sort_keys=True)
    where = (mlflow.get_tracking_uri(), experiment_id, key)
    if _saved_views.get(where) == text:
        return
    now = int(time.time() * 1000)
    deflated = base64.b64encode(zlib.compress(text.encode())).decode()
    view = {"name": name, "createdAt": now, "updatedAt": now, "state": f"deflate;{deflated}"}
    tag_experiment(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(view))
    _saved_views[where] = text


def tag_experiment(experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag that several processes of a sweep may set at once: the store
    inserts a new tag, so the second of two first writers fails (a unique-key violation on
    PostgreSQL) and, once the tag exists, updates it."""
    try:
        MlflowClient().set_experiment_tag(experiment_id, key, value)
    except MlflowException:  # another process of the sweep inserted it first: now it updates
        time.sleep(0.2)
        MlflowClient().set_experiment_tag(experiment_id, key, value)


def leaderboard_view(
    parent_run_id: str, keys: Sequence[str], objective: Objective, pruning: bool
) -> dict[str, Any]:
    """The sweep's trials, best first, with their hyperparameters and cost: the answer."""
    metrics = (f"best_{objective.name}", "seconds_per_epoch", "attention_entropy")
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": f"metrics.`best_{objective.name}`",
        "orderByAsc": objective.ascending,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [
            *(f"params.`{hp}`" for hp in keys),
            *(f"metrics.`{m}`" for m in metrics),
            *([f"tags.`{PRUNED_AT_TAG}`"] if pruning else []),
        ],
    }


def ui_command(uri: str) -> str | None:
    """The command that serves the UI for `uri`; None for a tracking server (it serves it)."""
    if urlparse(uri).scheme in ("http", "https"):
        return None
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --workers 1"


def show_runs_page(cfg: DictConfig, view: str | None = None) -> str | None:
    """End a command with the link to its experiment's runs page (in saved `view` when the
    experiment has it), alone on the last line, after a line saying how to serve the UI;
    returns the link, None when there is no such experiment."""
    uri, name = str(cfg.tracking.uri), str(cfg.name)
    if not store_exists(uri):
        return None
    found = MlflowClient(uri).get_experiment_by_name(name)
    if found is None:
        return None
    if view is not None and VIEW_TAG_PREFIX + view not in found.tags:
        view = None
    link = runs_page(uri, found.experiment_id, view)
    command = ui_command(uri)
    if command is None:
        log.info("results: MLflow experiment '%s' on %s; its runs:", name, uri)
    else:
        log.info("results: MLflow experiment '%s' in %s; run `%s`, then open:", name, uri, command)
    print(link, flush=True)  # stdout on purpose: the link alone, for a script or a click
    return link
