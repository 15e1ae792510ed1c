"""Search spaces: YAML entries become Keras Tuner hyperparameters; malformed ones never start."""

from __future__ import annotations

from collections.abc import Callable

import keras_tuner
import pytest
from omegaconf import DictConfig, OmegaConf

from sweep import space
from sweep.config import CONF_DIR, compose_config
from sweep.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def with_space(make_config: Callable[..., DictConfig], entries: dict, **search) -> DictConfig:
    cfg = make_config("+experiment=smoke")
    cfg.search.space = {}
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"search": {"space": entries, **search}})
    OmegaConf.set_struct(cfg, True)
    return cfg


def test_every_type_translates(make_config: Callable[..., DictConfig]) -> None:
    cfg = with_space(
        make_config,
        {
            "model.attention.output_dim": {"type": "choice", "values": [8, 16]},
            "model.embedding_dim": {"type": "int", "min": 4, "max": 12, "step": 4},
            "train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
            "model.mask_padding": {"type": "boolean"},
        },
    )
    space.check_space(cfg)
    hp = space.hyperparameters(cfg.search.space)
    by_name = {p.name: p for p in hp.space}
    assert isinstance(
        by_name["model.attention.output_dim"], keras_tuner.engine.hyperparameters.Choice
    )
    assert by_name["model.attention.output_dim"].values == [8, 16]
    embedding = by_name["model.embedding_dim"]
    assert (embedding.min_value, embedding.max_value, embedding.step) == (4, 12, 4)
    rate = by_name["train.learning_rate"]
    assert (rate.min_value, rate.max_value, rate.sampling) == (1e-4, 1e-2, "log")
    assert isinstance(by_name["model.mask_padding"], keras_tuner.engine.hyperparameters.Boolean)

    trial = space.SearchSpace.of(cfg).apply(
        {
            "model.attention.output_dim": 16,
            "model.embedding_dim": 12,
            "train.learning_rate": 0.003,
            "model.mask_padding": False,
        },
    )
    assert trial.model.attention.output_dim == 16
    assert trial.model.embedding_dim == 12
    assert trial.train.learning_rate == 0.003
    assert trial.model.mask_padding is False
    assert cfg.model.attention.output_dim == 8, "the base config must stay untouched"


def test_mixed_choices_map_back_to_config_values(make_config: Callable[..., DictConfig]) -> None:
    uniform = {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05}}
    cfg = with_space(
        make_config,
        {
            "model.attention.scale": {
                "type": "choice",
                "values": ["none", "sqrt_dk", 8.0, "learned"],
            },
            "model.attention.initializer": {"type": "choice", "values": [uniform, "orthogonal"]},
        },
    )
    space.check_space(cfg)
    hp = space.hyperparameters(cfg.search.space)
    scale_values = next(p for p in hp.space if p.name == "model.attention.scale").values
    assert scale_values == ["none", "sqrt_dk", "8.0", "learned"]  # one type for Keras Tuner
    init_values = next(p for p in hp.space if p.name == "model.attention.initializer").values
    assert init_values[0] == "RandomUniform(minval=-0.05,maxval=0.05)"
    trial = space.SearchSpace.of(cfg).apply(
        {"model.attention.scale": "8.0", "model.attention.initializer": init_values[0]},
    )
    assert trial.model.attention.scale == 8.0
    assert OmegaConf.to_container(trial.model.attention.initializer) == uniform


@pytest.mark.parametrize(
    ("entries", "search", "key"),
    [
        ({}, {}, "search.space"),
        (
            {"model.attention.outptu_dim": {"type": "choice", "values": [1]}},
            {},
            "search.space.model.attention.outptu_dim",
        ),
        ({"tracking.uri": {"type": "choice", "values": ["x"]}}, {}, "search.space.tracking.uri"),
        (
            {"model.attention.output_dim": {"type": "choice", "values": []}},
            {},
            "search.space.model.attention.output_dim.values",
        ),
        (
            {"model.attention.output_dim": {"type": "choice", "values": [16, 0]}},
            {},
            "search.space.model.attention.output_dim.values",
        ),
        (
            {"model.embedding_dim": {"type": "int", "min": 12, "max": 4}},
            {},
            "search.space.model.embedding_dim.min",
        ),
        (
            {"train.learning_rate": {"type": "float", "min": 0.0, "max": 0.1, "sampling": "log"}},
            {},
            "search.space.train.learning_rate.min",
        ),
        (
            {"train.learning_rate": {"type": "float", "min": 0.001, "max": 0.1}},
            {"tuner": "grid"},
            "search.space.train.learning_rate.step",
        ),
        (
            {"model.attention.scale": {"type": "choice", "values": ["sqrt_dk", "bogus"]}},
            {},
            "search.space.model.attention.scale.values",
        ),
    ],
)
def test_malformed_space_is_rejected_naming_the_entry(
    make_config: Callable[..., DictConfig], entries: dict, search: dict, key: str
) -> None:
    cfg = with_space(make_config, entries, **search)
    with pytest.raises(ConfigError) as err:
        space.check_space(cfg)
    assert err.value.key == key, str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_type_is_rejected_at_composition(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"search\.space"):
        compose_config(
            ["+experiment=smoke", "search.space={model.dropout: {type: gaussian, values: [0.1]}}"]
        )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_shipped_experiment_composes_and_validates(experiment: str) -> None:
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.name == experiment
    assert cfg.search is not None and cfg.search.space
    hp = space.hyperparameters(cfg.search.space)
    assert [p.name for p in hp.space] == list(cfg.search.space)


def test_shipped_experiments_are_the_promised_ones() -> None:
    assert set(EXPERIMENTS) >= {
        "dim_search",
        "scale_search",
        "init_search",
        "seqlen_search",
        "full_search",
        "smoke",
    }
    dims = compose_config(["+experiment=dim_search"]).search.space["model.attention.output_dim"]
    assert list(dims["values"]) == [16, 32, 64, 128, 256]
    seqs = compose_config(["+experiment=seqlen_search"]).search.space["data.seq_len"]
    assert list(seqs["values"]) == [64, 128, 256, 512]


def test_the_attention_study_crosses_the_four_knobs_around_the_original() -> None:
    """Every combination of the four knobs' levels is a cell (a grid over all of them), the
    original configuration one of them, plain averaging (scale=uniform) a level of the scale;
    3 seeds per cell, each its own validation split."""
    cfg = compose_config(["+experiment=attention_study"])
    space = cfg.search.space
    assert list(space) == [
        "model.attention.output_dim",
        "model.attention.scale",
        "model.attention.initializer",
        "data.seq_len",
    ]
    cells = 1
    for key, entry in space.items():
        assert entry["type"] == "choice" and len(entry["values"]) >= 2, key
        assert OmegaConf.select(cfg, key) in entry["values"], f"the original {key} is no level"
        cells *= len(entry["values"])
    assert "uniform" in space["model.attention.scale"]["values"]
    assert 512 in space["data.seq_len"]["values"]
    assert (cfg.search.tuner, cfg.search.max_trials) == ("grid", cells)
    assert cfg.search.executions_per_trial >= 3 and cfg.data.split_per_seed
