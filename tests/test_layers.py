"""Tests for `sweep.layers.SelfAttention` against a plain-NumPy reference."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest

from sweep.layers import SelfAttention, resolve_scale

SCALES = [8.0, "sqrt_dk", "none", "learned", "uniform"]
BATCH, SEQ, D_IN, D_OUT = 3, 7, 4, 5


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)


def reference_attention(
    x: np.ndarray, kernel: np.ndarray, scale: float, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product self-attention in float64 NumPy; masked keys get -inf."""
    x = x.astype(np.float64)
    kernel = kernel.astype(np.float64)
    q, k, v = x @ kernel[0], x @ kernel[1], x @ kernel[2]
    scores = q @ np.swapaxes(k, -1, -2) / scale
    if mask is not None:
        scores = np.where(mask[:, None, :], scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(scores)
    weights = exp / exp.sum(axis=-1, keepdims=True)
    return weights @ v, weights


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SEQ, D_IN)).astype("float32")
    # Rows with no, some, and heavy padding (each keeps at least one real token).
    mask = np.ones((BATCH, SEQ), dtype=bool)
    mask[1, :3] = False
    mask[2, 1:] = False
    return x, mask


def make_model(scale: float | str, seq_len: int | None = 12) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((seq_len,), dtype="int32"),
            keras.layers.Embedding(50, 8, mask_zero=True),
            SelfAttention(6, scale=scale),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


@pytest.mark.parametrize("use_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("scale", SCALES)
def test_matches_numpy_reference(scale: float | str, use_mask: bool) -> None:
    x, mask = make_inputs()
    layer = SelfAttention(D_OUT, scale=scale)
    output, weights = layer(x, mask=mask if use_mask else None, return_attention_scores=True)
    output, weights = keras.ops.convert_to_numpy(output), keras.ops.convert_to_numpy(weights)

    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert kernel.shape == (3, D_IN, D_OUT)
    expected_scale = {8.0: 8.0, "sqrt_dk": math.sqrt(D_OUT), "none": 1.0, "uniform": math.inf}.get(
        scale, math.sqrt(D_OUT)
    )
    ref_out, ref_weights = reference_attention(
        x, kernel, expected_scale, mask if use_mask else None
    )
    assert output.shape == (BATCH, SEQ, D_OUT)
    assert weights.shape == (BATCH, SEQ, SEQ)
    np.testing.assert_allclose(weights, ref_weights, atol=1e-5)
    np.testing.assert_allclose(output, ref_out, atol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    if use_mask:
        padded_keys = np.broadcast_to(~mask[:, None, :], weights.shape)
        np.testing.assert_allclose(weights[padded_keys], 0.0, atol=1e-7)
        # Without a mask the padded keys do get attention, so the mask matters here.
        unmasked = keras.ops.convert_to_numpy(layer(x, return_attention_scores=True)[1])
        assert unmasked[padded_keys].min() > 1e-4


def test_learned_scale_is_trainable_and_used() -> None:
    x, mask = make_inputs()
    layer = SelfAttention(D_OUT, scale="learned")
    layer.build(x.shape)
    assert layer.log_scale is not None
    np.testing.assert_allclose(float(layer.log_scale.numpy()), math.log(math.sqrt(D_OUT)))
    assert any(w is layer.log_scale for w in layer.trainable_weights)

    # The temperature is exp(log_scale), not a constant sqrt(d_k).
    layer.log_scale.assign(math.log(2.5))
    output = keras.ops.convert_to_numpy(layer(x, mask=mask))
    ref_out, _ = reference_attention(x, keras.ops.convert_to_numpy(layer.kernel), 2.5, mask)
    np.testing.assert_allclose(output, ref_out, atol=1e-5)


def test_fixed_scales_create_no_scale_weight() -> None:
    layer = SelfAttention(D_OUT, scale="sqrt_dk")
    layer.build((None, SEQ, D_IN))
    assert [w.name for w in layer.weights] == ["kernel"]


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (8.0, 8.0),
        (3, 3.0),
        ("sqrt_dk", 2.0),
        ("none", 1.0),
        ("learned", 2.0),
        ("uniform", math.inf),
    ],
)
def test_resolve_scale(scale: float | str, expected: float) -> None:
    assert resolve_scale(scale, 4) == expected


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"output_dim": 0}, "output_dim=0"),
        ({"output_dim": -3}, "output_dim=-3"),
        ({"output_dim": 2.5}, "output_dim=2.5"),
        ({"output_dim": 4, "scale": 0}, "scale=0"),
        ({"output_dim": 4, "scale": -1.0}, "scale=-1.0"),
        ({"output_dim": 4, "scale": float("inf")}, "scale=inf"),
        ({"output_dim": 4, "scale": float("nan")}, "scale=nan"),
        ({"output_dim": 4, "scale": "bogus"}, "scale='bogus'"),
        (
            {"output_dim": 4, "initializer": "not_an_initializer"},
            "initializer='not_an_initializer'",
        ),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"Received: {bad}")):
        SelfAttention(**kwargs)


def test_initializer_config_dict() -> None:
    init = {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05}}
    layer = SelfAttention(16, initializer=init)
    layer.build((None, SEQ, 32))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert np.all(np.abs(kernel) <= 0.05)
    # Spread over the whole range (glorot_uniform would exceed 0.05 here).
    assert np.abs(kernel).max() > 0.045
    assert layer.get_config()["initializer"]["class_name"] == "RandomUniform"


@pytest.mark.parametrize("input_shape", [(BATCH, SEQ, D_IN), (None, SEQ, D_IN), (2, 3, 9)])
def test_compute_output_shape_matches_output(input_shape: tuple) -> None:
    layer = SelfAttention(D_OUT)
    expected = layer.compute_output_shape(input_shape)
    concrete = tuple(2 if d is None else d for d in input_shape)
    output = layer(np.zeros(concrete, dtype="float32"))
    assert expected == (*input_shape[:-1], D_OUT)
    assert tuple(output.shape) == tuple(2 if d is None else d for d in expected)


def test_symbolic_call_with_scores() -> None:
    inputs = keras.Input((SEQ, D_IN))
    output, weights = SelfAttention(D_OUT)(inputs, return_attention_scores=True)
    assert tuple(output.shape) == (None, SEQ, D_OUT)
    assert tuple(weights.shape) == (None, SEQ, SEQ)


def test_compute_mask_passes_mask_through() -> None:
    _, mask = make_inputs()
    assert SelfAttention(D_OUT).compute_mask(None, mask) is mask


@pytest.mark.parametrize("scale", SCALES)
def test_save_and_reload(scale: float | str, tmp_path) -> None:
    model = make_model(scale)
    layer = model.layers[1]
    assert isinstance(layer, SelfAttention)
    if scale == "learned":
        # Move away from the initial value so reloading has to restore it.
        layer.log_scale.assign(math.log(3.3))
    tokens = np.random.default_rng(1).integers(1, 50, size=(4, 12)).astype("int32")
    tokens[1, :5] = 0
    tokens[2, :11] = 0
    expected = keras.ops.convert_to_numpy(model(tokens))

    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)

    reloaded_layer = reloaded.layers[1]
    assert type(reloaded_layer) is SelfAttention
    assert reloaded_layer.get_config() == layer.get_config()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(tokens)), expected, atol=1e-6)
    if scale == "learned":
        np.testing.assert_allclose(float(reloaded_layer.log_scale.numpy()), math.log(3.3))


@pytest.mark.parametrize("scale", SCALES)
def test_padding_is_ignored(scale: float | str) -> None:
    model = make_model(scale, seq_len=None)
    short = np.array([[0, 0, 0, 5, 6, 7]], dtype="int32")
    long = np.array([[0, 0, 0, 0, 0, 0, 0, 5, 6, 7]], dtype="int32")
    pooled = keras.Model(model.inputs[0], model.layers[2].output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pooled(short)),
        keras.ops.convert_to_numpy(pooled(long)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(short)),
        keras.ops.convert_to_numpy(model(long)),
        atol=1e-6,
    )


def test_uniform_scale_averages_the_values_of_real_tokens() -> None:
    """The control: every unmasked key weighs 1/n, whatever the kernel; padding none."""
    x, mask = make_inputs()
    layer = SelfAttention(D_OUT, scale="uniform")
    output, weights = layer(x, mask=mask, return_attention_scores=True)
    weights = keras.ops.convert_to_numpy(weights)
    expected = mask[:, None, :] / mask.sum(axis=1)[:, None, None]
    np.testing.assert_allclose(weights, np.broadcast_to(expected, weights.shape), atol=1e-7)
    value = x @ keras.ops.convert_to_numpy(layer.kernel)[2]
    mean = (value * mask[..., None]).sum(axis=1) / mask.sum(axis=1)[:, None]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(output), np.broadcast_to(mean[:, None], output.shape), atol=1e-5
    )
