"""`python -m benchmarks [OPTIONS]`: the same command as `python benchmarks/run.py`."""

from benchmarks.cli import main

if __name__ == "__main__":
    main(prog="python -m benchmarks")
