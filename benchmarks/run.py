"""`python benchmarks/run.py [OPTIONS]`: the benchmark as a script (`python -m benchmarks` is
the same command); everything else lives in the `benchmarks` package, see its docstring."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python puts benchmarks/ itself first on the path, where the package's
    # modules would shadow top-level ones of the same name; the repository root holds it.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from benchmarks.cli import main

    main()
