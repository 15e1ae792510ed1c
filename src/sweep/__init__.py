"""attention-sweep: which attention settings matter, found by Keras Tuner, recorded in MLflow."""

import os

# TensorFlow's C++ start-up chatter hides the harness's own lines; users can lower it again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
