"""Fixed padding against length-bucketed batches, through the harness's own training path, at
seq_len 64 (the base config) and 512 / 800 (long_reviews' settings); at 512 also a bare masked
Keras model of the same shape, the yardstick for the harness's layer (and XLA with `--xla`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.fits import harness_fit, numpy_fit
from benchmarks.measure import Paired, Timing, median, paired
from benchmarks.settings import Bench

if TYPE_CHECKING:
    import keras
    from omegaconf import DictConfig

    from sweep.train import Arrays

#: long_reviews' settings, for the long sequence lengths.
LONG = (
    "model.attention.output_dim=64",
    "model.attention.scale=sqrt_dk",
    "model.attention.initializer=glorot_uniform",
    "train.learning_rate=5e-4",
)
#: Each sequence length's overrides; others (`--seq-lens`, `--quick`'s 16) use the base config.
SETTINGS: dict[int, tuple[str, ...]] = {64: (), 512: LONG, 800: LONG}
#: The bare model and XLA are measured at this length only (and at any length with `--quick`).
YARDSTICK_SEQ_LEN = 512
WALL_TARGETS = {"64": "<= 1.02", "512": "<= 0.45", "800": "<= 0.35"}  # bucketed / fixed


def bare_attention(units: int) -> keras.layers.Layer:
    """A minimal masked scaled dot-product attention layer in plain `keras.ops`. (Keras's own
    `Attention` on `Dense` Q/K/V projections is 2.2x slower than this at seq_len 512: no fair
    yardstick.)"""
    import keras
    from keras import ops

    class BareAttention(keras.layers.Layer):
        def __init__(self, units: int) -> None:
            super().__init__()
            self.units, self.supports_masking = units, True

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(3, input_shape[-1], self.units))

        def call(self, x: Any, mask: Any = None) -> Any:
            q = ops.matmul(x, self.kernel[0]) * (self.units**-0.5)
            scores = ops.matmul(q, ops.swapaxes(ops.matmul(x, self.kernel[1]), 1, 2))
            if mask is not None:
                scores = scores + ops.expand_dims((1.0 - ops.cast(mask, "float32")) * -1e9, 1)
            return ops.matmul(ops.softmax(scores), ops.matmul(x, self.kernel[2]))

    return BareAttention(units)


def bare_masked_fit(cfg: DictConfig, xy: Arrays) -> Timing:
    """Plain Keras of the same shape, as a user would write it without the harness: Embedding
    (mask_zero) -> `bare_attention` -> pooling -> Dropout -> Dense, NumPy inputs, no callbacks."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    tokens = keras.Input((cfg.data.seq_len,), dtype="int32")
    x = keras.layers.Embedding(cfg.data.num_words, cfg.model.embedding_dim, mask_zero=True)(tokens)
    x = bare_attention(cfg.model.attention.output_dim)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(cfg.model.dropout)(x)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(
        keras.optimizers.Adam(cfg.train.learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fitted = numpy_fit(model, cfg, xy)
    return Timing(fitted.wall_s, fitted.cpu_s, fitted.result.history["val_accuracy"][-1])


def row(b: Bench, seq_len: int, epochs: int) -> dict[str, Any]:
    """One sequence length: fixed vs bucketed, paired; at 512 also bare Keras and XLA."""
    from sweep import train
    from sweep.config import compose_config

    extra = [f"data.seq_len={seq_len}", f"train.epochs={epochs}", *SETTINGS.get(seq_len, ())]
    if b.limit:
        extra.append(f"data.limit={b.limit}")
    fixed = compose_config(b.overrides(*extra, "train.batching=fixed"))
    bucketed = compose_config(b.overrides(*extra, "train.batching=bucketed"))
    xy = train.arrays(train.load(fixed), fixed)
    kinds = {"fixed": lambda: harness_fit(fixed, xy), "bucketed": lambda: harness_fit(bucketed, xy)}
    yardstick = seq_len == YARDSTICK_SEQ_LEN or b.quick
    if yardstick:
        kinds["bare_fixed"] = lambda: bare_masked_fit(fixed, xy)
    if b.xla and yardstick:
        kinds["bucketed_xla"] = lambda: harness_fit(bucketed, xy, jit=True)
    measured = paired(kinds, b.repeats, f"bucketing {seq_len}")
    return {
        "s_per_epoch": {k: median(measured.series(k)) / epochs for k in kinds},
        "val_accuracy": {k: median(measured.series(k, "val_accuracy")) for k in kinds},
        "bucketed_over_fixed": measured.ratio("bucketed", "fixed"),
        "bucketed_over_fixed_cpu": measured.ratio("bucketed", "fixed", "cpu_s"),
        "tokens_kept": float(xy.train.lengths.sum() / (seq_len * len(xy.train))),
        "train_reviews": len(xy.train),
        "val_reviews": len(xy.val),
        **measured.to_json(),
        **yardsticks(measured),
    }


def yardsticks(measured: Paired) -> dict[str, float]:
    """Fixed / bare Keras and XLA / bucketed, where they were measured."""
    found = {}
    if "bare_fixed" in measured.kinds:
        found["fixed_over_bare"] = measured.ratio("fixed", "bare_fixed")
    if "bucketed_xla" in measured.kinds:
        found["xla_over_bucketed"] = measured.ratio("bucketed_xla", "bucketed")
    return found


def run(b: Bench) -> dict[str, Any]:
    """Seconds per epoch, fixed padding vs length buckets, at each of `--seq-lens`; validation
    accuracy after the last epoch of each."""
    from sweep import train
    from sweep.config import compose_config

    epochs = b.epochs or 2
    warm = compose_config(b.overrides("train.epochs=1", *b.quick_limit()))
    harness_fit(warm, train.arrays(train.load(warm), warm))  # imports and first tracing
    results: dict[str, Any] = {"epochs": epochs, "repeats": b.repeats}
    for seq_len in b.seq_lens:
        results[str(seq_len)] = row(b, seq_len, epochs)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The bucketing block of `benchmarks/README.md`."""
    r, m = results["bucketing"], results["machine"]
    rows = {k: v for k, v in r.items() if isinstance(v, dict)}
    first = next(iter(rows.values()))
    lines = [
        f"Measured {m['date']}, {m['cores']} cores, `{results['command']}`: "
        f"{r['epochs']} epochs per fit, {r['repeats']} paired repeats in alternating order, "
        f"medians; {first['train_reviews']:,} training and {first['val_reviews']:,} validation "
        "reviews; validation accuracy after the last epoch.",
        "",
        "| seq_len | tokens kept by fixed padding | fixed s/epoch | bucketed s/epoch "
        "| bucketed / fixed, wall | target | bucketed / fixed, CPU | val acc fixed "
        "| val acc bucketed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seq_len, one in rows.items():
        t, acc = one["s_per_epoch"], one["val_accuracy"]
        cpu = Paired.from_json(one, ("fixed", "bucketed")).ratio("bucketed", "fixed", "cpu_s")
        lines.append(
            f"| {seq_len} | {one['tokens_kept']:.0%} | {t['fixed']:.1f} | {t['bucketed']:.1f} "
            f"| **{one['bucketed_over_fixed']:.2f}** | {WALL_TARGETS.get(seq_len, '')} | {cpu:.2f} "
            f"| {acc['fixed']:.4f} | {acc['bucketed']:.4f} |"
        )
    for seq_len, one in rows.items():
        lines += yardstick_lines(seq_len, one)
    return "\n".join(lines) + "\n"


def yardstick_lines(seq_len: str, one: dict[str, Any]) -> list[str]:
    """The sentence under the table on the bare Keras model (and XLA), where measured."""
    if "fixed_over_bare" not in one:
        return []
    t, acc = one["s_per_epoch"], one["val_accuracy"]
    text = (
        f"At seq_len {seq_len}: the harness with fixed padding / a bare masked Keras "
        f"model of the same shape: **{one['fixed_over_bare']:.3f}** (target <= 1.05; "
        f"{t['fixed']:.1f} vs {t['bare_fixed']:.1f} s/epoch)."
    )
    if "xla_over_bucketed" in one:
        text += (
            f" XLA (`jit_compile`) on bucketed batches / without: "
            f"{one['xla_over_bucketed']:.2f} ({t['bucketed_xla']:.1f} "
            f"s/epoch, val acc {acc['bucketed_xla']:.4f})."
        )
    return ["", text]
