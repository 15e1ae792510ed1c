"""One list of the config keys that are no part of a trial (`sweep.vocabulary.NOT_TRIAL`), read
the same way by a resume, by pooling sweeps and by a run's params."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from sweep import tracking
from sweep.tuner.state import compared
from sweep.vocabulary import part_of_trial, searchable

HARNESS_KEYS = ("name", "tracking.uri", "report.margin", "data.path", "search.initial")


@pytest.mark.parametrize(
    ("key", "trial"),
    [
        ("seed", True),
        ("data.seq_len", True),
        ("train.verbose_ish", True),  # a key inside a listed one only, not a prefix of a word
        ("search.patience", True),
        ("tracking", False),
        ("tracking.uri", False),
        ("data.path", False),
        ("search.replicates.max_runs", False),
    ],
)
def test_a_key_is_part_of_a_trial_unless_listed(key: str, trial: bool) -> None:
    assert part_of_trial(key) is trial


def test_only_trial_keys_of_data_model_and_train_are_searchable() -> None:
    assert searchable("model.attention.output_dim")
    assert not searchable("data.cache_dir")
    assert not searchable("seed")
    assert not searchable("model")


def test_a_resume_compares_trial_keys_on_both_sides() -> None:
    """A state file from before a key became free to change (report.*, once) still holds it:
    leaving it out of both sides resumes that sweep rather than refusing it."""
    saved = {"train.epochs": 2, "report.margin": 0.01, "name": "x", "data.path": "a"}
    assert compared(saved) == {"train.epochs": 2}


def test_a_runs_params_are_its_trial_keys(make_config: Callable[..., DictConfig]) -> None:
    params = tracking.run_params(make_config("+experiment=smoke"))
    assert {"seed", "data.seq_len", "model.attention.output_dim", "train.epochs"} <= set(params)
    assert not [k for k in params if not part_of_trial(k) or k.startswith("search.")], params
    assert not set(HARNESS_KEYS) & set(params)
