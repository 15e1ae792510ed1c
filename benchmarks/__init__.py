"""Benchmarks: the harness costs nothing, the data pipeline is fast, sweeps finish sooner.

One invocation, one machine, one data set; each section its own module under
`benchmarks.sections` (the table of them is `benchmarks.sections.SECTIONS`):

* **data** - first load (read + tokenise every review into a cold cache) and cached load;
* **overhead** - a bare `model.fit` of the base config (plain Keras, NumPy inputs, no callbacks)
  against the same config as one harness trial (`sweep.train.run`: a tracked MLflow run with
  every metric and artifact), both warm, same seed, epochs and batch size, in alternating order,
  median of paired ratios;
* **pipeline** - NumPy arrays into `model.fit` (what `sweep.train.fit` does) against a
  hand-built `tf.data` pipeline, the alternative it was measured against;
* **sweeps** - trials per hour and peak memory of `smoke` and `dim_search` (`python -m sweep`
  in a subprocess each, so its peak RSS is its own);
* **search** - Hyperband against random search on the same space and epoch budget;
* **bucketing** - fixed padding against length-bucketed batches (`--sections bucketing`);
* **pruning** - median pruning against none: the same random search (same seed, so the same
  trials), the epochs spent and the best objective both ways.

Results are printed as JSON (and written to `--out`) and as markdown tables into `--readme`,
between the results markers (the rest of the file is left as it is).

    python benchmarks/run.py                   # the full benchmark (~15 min on 2 cores)
    python -m benchmarks --data DIR --epochs 1 --quick --out r.json --readme r.md  # ~2 min

Keras, TensorFlow, MLflow and the harness load inside the functions that measure, so importing
this package (`--help`, `--from-json`) costs nothing.
"""
