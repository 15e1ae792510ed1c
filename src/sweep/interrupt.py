"""Ctrl-C, remembered: the command line's SIGINT handler sets `INTERRUPTED`, and training
(`train.StopOnInterrupt`) raises it at the next batch boundary. A leaf, so the shell can set it
without loading Keras."""

from __future__ import annotations

import threading

#: Set when the user pressed Ctrl-C.
INTERRUPTED = threading.Event()
