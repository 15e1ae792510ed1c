"""Shared fixtures: a tiny learnable IMDB tree, configs shrunk to seconds, isolated stores."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from sweep.config import compose_config, validate

#: The real dataset, beside the checkout (../shared/data), for integration tests.
REAL_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / ("aclImdb_v1_labeled.tar.gz")
)
#: Artifacts every tracked run (single run or trial) carries.
RUN_ARTIFACTS = {"config.yaml", "learning_curves.png", "attention_heatmap.png", "model_summary.txt"}
POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "waste"]
FILLER = ["the", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and", "a"]


def write_tiny_imdb(root: Path, per_class: int = 100, seed: int = 0) -> Path:
    """An aclImdb/ tree whose sentiment is carried by a few words, so a model learns it fast."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                tokens = [rng.choice(FILLER) for _ in range(rng.randint(8, 30))]
                for _ in range(3):
                    tokens.insert(rng.randrange(len(tokens)), rng.choice(words))
                rating = rng.choice([8, 9, 10] if label == "pos" else [1, 2, 3])
                (folder / f"{i}_{rating}.txt").write_text(" ".join(tokens) + " <br /><br />.")
    return root / "aclImdb"


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_imdb(tmp_path_factory.mktemp("data"))


def tiny_overrides(work: Path, data_path: Path) -> list[str]:
    """Overrides that make any config run in seconds, writing only under `work`."""
    return [
        f"data.path={data_path}",
        "data.limit=null",
        "data.num_words=64",
        "data.seq_len=16",
        f"data.cache_dir={work / 'cache'}",
        "model.embedding_dim=8",
        "model.attention.output_dim=8",
        "train.epochs=2",
        "train.batch_size=32",
        "train.learning_rate=0.03",
        "train.verbose=0",
        f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_root={work / 'mlruns' / 'artifacts'}",
        "tracking.log_models=none",
        f"sweep.dir={work / 'sweeps'}",
    ]


@pytest.fixture
def make_config(tmp_path: Path, tiny_imdb: Path) -> Callable[..., DictConfig]:
    """Compose `conf/` like `python -m sweep`, shrunk to tiny data under tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([*tiny_overrides(tmp_path, tiny_imdb), *overrides])

    return make


@pytest.fixture
def make_sweep(make_config: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """The smoke experiment on tiny data with `space` as its whole search space."""

    def make(space: dict, *overrides: str) -> DictConfig:
        cfg = make_config("+experiment=smoke", "search.patience=0", *overrides)
        cfg.search.space = {}
        OmegaConf.set_struct(cfg, False)
        cfg = OmegaConf.merge(cfg, {"search": {"space": space}})
        OmegaConf.set_struct(cfg, True)
        validate(cfg)
        return cfg

    return make


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `python -m sweep` in a subprocess from tmp_path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    # the package's own defaults: a quiet console, which the tests' line counts rely on
    for name in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        env.pop(name, None)
    return env


PYTHON = sys.executable


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str], module: str = "sweep", timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it, output captured."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def own_lines(stderr: str) -> list[str]:
    """The non-blank stderr lines: the harness's own, since TensorFlow's start-up chatter is
    kept off the console (`sweep.quiet`); any that came back would count against a test."""
    return [line for line in stderr.splitlines() if line.strip()]
