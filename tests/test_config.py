"""The Hydra config: defaults reproduce the original experiment, bad values fail in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sweep.config import CONF_DIR, compose_config
from tests.conftest import user_experiment

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_defaults_reproduce_the_original_experiment() -> None:
    cfg = compose_config()
    assert cfg.data.num_words == 20000
    assert cfg.data.seq_len == 64
    assert cfg.model.embedding_dim == 128
    assert cfg.model.attention.output_dim == 128
    assert cfg.model.attention.scale == 8.0
    assert cfg.model.attention.initializer.class_name == "RandomUniform"
    assert dict(cfg.model.attention.initializer.config) == {"minval": -0.05, "maxval": 0.05}
    assert cfg.model.dropout == 0.5
    assert (cfg.train.optimizer, cfg.train.learning_rate) == ("adam", 2e-4)
    assert (cfg.train.batch_size, cfg.train.epochs) == (32, 5)
    assert cfg.data.val_fraction == 0.2
    assert cfg.search is None
    assert cfg.tracking.uri == "sqlite:///mlruns/mlflow.db"


#: Bad command lines, each with the start of its one-line error: "config error: KEY=VALUE:"
#: and, where the reason matters, the reason. One list for every kind of bad value (it was kept
#: three times: composed here, through real processes, and again for single runs).
BAD_COMMAND_LINES = [
    (["model.attention.outptu_dim=3"], "config error: model.attention.outptu_dim=3: no such"),
    (["trian.epochs=3"], "config error: trian.epochs=3: no such"),
    (["model.attention.output_dim=abc"], "config error: model.attention.output_dim=abc:"),
    (["train.epochs=1.5"], "config error: train.epochs=1.5:"),
    (["train.epochs=many"], "config error: train.epochs=many:"),
    (["train.batch_size=1.5"], "config error: train.batch_size=1.5:"),
    (["model.attention.output_dim=0"], "config error: model.attention.output_dim=0:"),
    (["model.attention.output_dim=-4"], "config error: model.attention.output_dim=-4:"),
    (["data.seq_len=-5"], "config error: data.seq_len=-5:"),
    (["data.seq_len=0"], "config error: data.seq_len=0:"),
    (["data.seq_len=1000000"], "config error: data.seq_len=1000000: must be at most"),
    (
        ["model.attention.initializer=not_an_init"],
        "config error: model.attention.initializer=not_an_init: not a Keras initializer",
    ),
    (["model.attention.scale=0"], "config error: model.attention.scale=0:"),
    (["model.attention.scale=-2.0"], "config error: model.attention.scale=-2.0:"),
    (["model.attention.scale=huge"], "config error: model.attention.scale=huge:"),
    (["model.dropout=1.5"], "config error: model.dropout=1.5:"),
    (["train.learning_rate=0"], "config error: train.learning_rate=0.0:"),
    (["train.optimizer=adamm"], "config error: train.optimizer=adamm:"),
    (["data.source=ftp"], "config error: data.source=ftp:"),
    (["export.ensemble=0"], "config error: export.ensemble=0: must be at least 1"),
    (
        ["export.ensemble=4", "export.top_k=3"],
        "config error: export.ensemble=4: is more than export.top_k=3",
    ),
    (  # the unknown type first, not the fields that type would take
        ["+experiment=smoke", "+search.space.model.dropout={type: normal, mu: 0.3, sigma: 1}"],
        "config error: search.space.model.dropout.type=normal: expected one of choice, int,",
    ),
    (["train.batching=ragged"], "config error: train.batching=ragged:"),
    (  # where the data is read from changes no trial (sweep.vocabulary.NOT_TRIAL)
        ["+experiment=smoke", "+search.space.data.cache_dir={type: choice, values: [a, b]}"],
        "config error: search.space.data.cache_dir=data.cache_dir: changes no trial",
    ),
    (
        ["model.mask_padding=false", "train.batching=bucketed"],
        "config error: train.batching=bucketed: needs model.mask_padding=true "
        "(else results depend on each batch's padding)",
    ),
    (["name=../../etc"], "config error: name=../../etc:"),
    (["+experiment=no_such_sweep"], "config error: experiment=no_such_sweep: no such experiment"),
    (["+experiment=smoke", "search.max_trials=0"], "config error: search.max_trials=0:"),
    (
        ["+experiment=smoke", "search.objective=val_f1"],
        "config error: search.objective=val_f1: no trial logs it",
    ),
    (
        [
            "+experiment=smoke",
            "search.space={data.seq_len: {type: choice, values: [12, 20]}}",
            "+search.space.data.seq_len={type: choice, values: [16, 0]}",
        ],
        "config error: search.space.data.seq_len.values=0: data.seq_len:",
    ),
    (
        ["tracking.uri=foo://bar"],
        "config error: tracking.uri=foo://bar: MLflow has no tracking store for 'foo:'",
    ),
    (
        ["tracking.uri=s3://bucket/mlruns"],
        "config error: tracking.uri=s3://bucket/mlruns: MLflow has no tracking store for 's3:'",
    ),
    (["tracking.uri=http://"], "config error: tracking.uri=http://: names no server"),
    (
        ["tracking.uri=http://127.0.0.1:notaport"],
        "config error: tracking.uri=http://127.0.0.1:notaport: not a valid URI",
    ),
    (
        ["tracking.uri=http://127.0.0.1:99999"],
        "config error: tracking.uri=http://127.0.0.1:99999: not a valid URI",
    ),
    (
        ["tracking.uri=sqlite:/mlruns.db"],
        "config error: tracking.uri=sqlite:/mlruns.db: expected sqlite:///",
    ),
    (["tracking.uri=sqlite://"], "config error: tracking.uri=sqlite://: expected sqlite:///"),
    (
        ["tracking.uri=postgresql:/mlflow"],
        "config error: tracking.uri=postgresql:/mlflow: expected postgresql://",
    ),
    (["tracking.uri=file:"], "config error: tracking.uri=file:: names no directory"),
    (
        ["tracking.uri=http://ml host:5000"],
        "config error: tracking.uri=http://ml host:5000: empty, or has spaces",
    ),
    (
        ["+experiment=smoke", "search.time_budget=soon"],
        "config error: search.time_budget=soon: expected a duration such as 90s, 30m, 2h or 1h30m",
    ),
    (
        ["+experiment=smoke", "search.time_budget=30x"],
        "config error: search.time_budget=30x: expected a duration such as 90s, 30m, 2h or 1h30m",
    ),
    (
        ["+experiment=smoke", "search.time_budget=-5m"],
        "config error: search.time_budget=-5m: expected a duration such as 90s, 30m, 2h or 1h30m",
    ),
    (
        ["+experiment=smoke", "search.time_budget=0"],
        "config error: search.time_budget=0: must be a positive duration",
    ),
    # the oracle's token is a secret: never a config value, never shown (test_oracle_token.py)
    (
        ["distributed.token=0123456789abcdefXYZ"],
        "config error: distributed.token: is never read from the config or command line",
    ),
    (
        [
            "+experiment=smoke",
            "tracking.uri=http://127.0.0.1:5000",
            "distributed.role=chief",
            "distributed.oracle=127.0.0.1:8000",
            "distributed.tls_cert=chief.pem",
        ],
        "config error: distributed.tls_cert=chief.pem: needs distributed.tls_key too",
    ),
    # n-grams (issue 25): refused before any data is read
    (["data.ngrams=0"], "config error: data.ngrams=0: must be at least 1"),
    (["data.ngrams=4"], "config error: data.ngrams=4: must be at most 3"),
    (
        ["data.ngrams=2", "data.ngram_buckets=0"],
        "config error: data.ngram_buckets=0: must be at least 1",
    ),
    (
        ["data.ngrams=3", "data.ngram_buckets=-8"],
        "config error: data.ngram_buckets=-8: must be at least 1",
    ),
    (
        ["data.ngram_buckets=65536"],
        "config error: data.ngram_buckets=65536: needs data.ngrams=2 or 3",
    ),
    # regularisation (issue 25)
    (["train.weight_decay=-0.1"], "config error: train.weight_decay=-0.1: must be at least 0"),
    (["model.token_dropout=1.0"], "config error: model.token_dropout=1.0: must be less than 1"),
    (["model.spatial_dropout=-0.2"], "config error: model.spatial_dropout=-0.2: must be at"),
    (["train.lr_schedule=step"], "config error: train.lr_schedule=step: expected one of"),
    (
        ["train.sparse_updates=true", "train.optimizer=sgd"],
        "config error: train.sparse_updates=True: needs train.optimizer=adam or adamw (not sgd)",
    ),
    (["train.decay_epochs=0"], "config error: train.decay_epochs=0.0: must be greater than 0"),
    (
        ["train.lr_schedule=cosine", "train.epochs=4", "train.warmup_epochs=4"],
        "config error: train.warmup_epochs=4.0: must be less than train.decay_epochs=4",
    ),
]


@pytest.mark.parametrize(("argv", "starts"), BAD_COMMAND_LINES, ids=lambda v: " ".join(v)[:60])
def test_bad_command_line_is_one_line_and_nothing_runs(
    refused: Callable[..., str], argv: list[str], starts: str
) -> None:
    assert refused(*argv).startswith(starts)


def test_a_multirun_over_experiments_with_search_settings_is_one_line(
    refused: Callable[..., str],
) -> None:
    """Hydra composes a multirun's config without its swept experiments first, where `search`
    is null: its traceback becomes one line naming the override (nothing runs)."""
    line = refused("+experiment=dim_search,scale_search", "search.max_trials=3", options=["-m"])
    assert line.startswith("config error: search.max_trials=3: a multirun over +experiment=")


@pytest.mark.parametrize(
    ("body", "starts"),
    [
        ("name: empty_space\n", "config error: search.space={}: empty"),
        (
            "name: no_such_key\nsearch:\n  space:\n    model.nope: {type: choice, values: [1]}\n",
            "config error: search.space.model.nope=",
        ),
        (
            "name: odd_type\nsearch:\n  space:\n    model.dropout: {type: normal, mu: 0.3}\n",
            "config error: search.space.model.dropout.type=normal: expected one of choice",
        ),
    ],
    ids=["empty", "unknown-key", "unknown-type"],
)
def test_bad_experiment_file_is_one_line_and_nothing_runs(
    refused: Callable[..., str], tmp_path: Path, body: str, starts: str
) -> None:
    name = body.split("\n")[0].removeprefix("name: ")
    conf = user_experiment(tmp_path, name, body)
    assert refused(f"+experiment={name}", options=["--config-dir", str(conf)]).startswith(starts)


@pytest.mark.parametrize("scale", ["sqrt_dk", "none", "learned", "8.0", "0.5"])
def test_every_scale_mode_is_accepted(scale: str) -> None:
    assert str(compose_config([f"model.attention.scale={scale}"]).model.attention.scale) == scale


@pytest.mark.parametrize("initializer", ["glorot_uniform", "he_normal", "orthogonal"])
def test_keras_initializer_names_are_accepted(initializer: str) -> None:
    cfg = compose_config([f"model.attention.initializer={initializer}"])
    assert cfg.model.attention.initializer == initializer


@pytest.mark.slow
def test_help_speaks_for_the_project_and_lists_every_experiment() -> None:
    """`python -m sweep --help` (Hydra's help, our template): what it does, the first commands,
    each experiment in conf/experiment/; no job runs. (`sweep.cli.main` is `python -m sweep`'s
    whole shell; its job, which would load TensorFlow, is never reached.)"""
    code = "import sys; from sweep import cli; cli.main(lambda cfg: sys.exit('a job ran'))"
    done = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert shown.startswith("attention-sweep: which attention settings")
    assert "python -m sweep.report" in shown and "powered by Hydra" not in shown
    listed = next(line for line in shown.splitlines() if line.startswith("experiment: "))
    shipped = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert listed == "experiment: " + ", ".join(shipped)
