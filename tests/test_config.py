"""The Hydra config: defaults reproduce the original experiment, bad values fail in one line."""

from __future__ import annotations

import pytest

from sweep.config import CONF_DIR, compose_config
from sweep.errors import ConfigError

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


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("model.attention.outptu_dim=3", "model.attention.outptu_dim", "3"),
        ("trian.epochs=3", "trian.epochs", "3"),
        ("model.attention.output_dim=abc", "model.attention.output_dim", "abc"),
        ("train.epochs=1.5", "train.epochs", "1.5"),
        ("model.attention.output_dim=0", "model.attention.output_dim", "0"),
        ("model.attention.output_dim=-4", "model.attention.output_dim", "-4"),
        ("data.seq_len=-5", "data.seq_len", "-5"),
        ("data.seq_len=0", "data.seq_len", "0"),
        ("data.seq_len=1000000", "data.seq_len", "1000000"),
        ("model.attention.initializer=not_an_init", "model.attention.initializer", "not_an_init"),
        ("model.attention.scale=0", "model.attention.scale", "0"),
        ("model.attention.scale=-2.0", "model.attention.scale", "-2.0"),
        ("model.attention.scale=huge", "model.attention.scale", "huge"),
        ("model.dropout=1.5", "model.dropout", "1.5"),
        ("train.learning_rate=0", "train.learning_rate", "0.0"),
        ("train.optimizer=adamm", "train.optimizer", "adamm"),
        ("data.source=ftp", "data.source", "ftp"),
        ("train.batching=ragged", "train.batching", "ragged"),
        ("name=../../etc", "name", "../../etc"),
        ("+experiment=no_such_sweep", "experiment", "no_such_sweep"),
    ],
)
def test_bad_value_is_one_line_naming_key_and_value(override: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"config error: {key}={value}:"), message


@pytest.mark.parametrize("scale", ["sqrt_dk", "none", "learned", "8.0", "0.5"])
def test_every_scale_mode_is_accepted(scale: str) -> None:
    assert str(compose_config([f"model.attention.scale={scale}"]).model.attention.scale) == scale


@pytest.mark.parametrize("initializer", ["glorot_uniform", "he_normal", "orthogonal"])
def test_keras_initializer_names_are_accepted(initializer: str) -> None:
    cfg = compose_config([f"model.attention.initializer={initializer}"])
    assert cfg.model.attention.initializer == initializer
