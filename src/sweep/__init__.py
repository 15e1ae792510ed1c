"""attention-sweep: which attention settings matter, found by Keras Tuner, recorded in MLflow."""

import os
import sys

from sweep import quiet

# TensorFlow's C++ lines hide the harness's own: off unless the user sets the level (0 shows
# all) or asks Hydra for debug output (hydra.verbose=true). Set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if quiet.verbose_requested(sys.argv[1:]) else "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# MLflow prints two links per run for a tracking server; each command ends with the one to open
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
quiet.hold_tensorflow_startup()
