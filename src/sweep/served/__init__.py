"""The served model: raw review text in, the positive-class probability and label out.

Every model the harness logs (a trial's, and the final one `export.evaluate` registers) is an
MLflow pyfunc model of this kind (docs/serving.md). `model_code.py` is the file MLflow runs to
build it (models from code); `scorer.py` does the work and ships with the model, with the
modules it needs, as the package PACKAGE (MLflow `code_paths`): the model then loads and
predicts in a process that never imports `sweep`, with the harness's own tokeniser.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sweep.served import scorer

#: The name the shipped modules go by inside a logged model.
PACKAGE = "attention_sweep_served"
#: The modules the served model runs, relative to `sweep/`: they import nothing from `sweep`
#: but each other, relatively, so the same files work here and as PACKAGE.
SHIPPED = ("served/scorer.py", "layers.py", "data/encoding.py", "data/ragged.py")
#: What MLflow runs to build the model at load time (and copies into every logged model).
MODEL_CODE = Path(__file__).with_name("model_code.py")
#: The input example every logged model carries (and docs/serving.md sends).
EXAMPLES = (
    "A great film: moving, funny, and superbly acted.",
    "A dreadful film. Dull, far too long, and a waste of a good cast.",
)


def stage(directory: Path) -> Path:
    """Copy the SHIPPED modules under `directory` as the package PACKAGE; its path."""
    source, package = Path(__file__).parents[1], directory / PACKAGE
    for name in SHIPPED:
        target = package / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
    for folder in {package, *(p.parent for p in package.rglob("*.py"))}:
        (folder / "__init__.py").touch()
    return package


def use_own_modules() -> None:
    """In a process that logs models, PACKAGE is the harness's own modules: MLflow runs each
    model it logs there on its input example, and importing the shipped copy would register a
    second `SelfAttention` class with Keras. In every other process the model imports the copy
    it ships."""
    own = {"": sys.modules["sweep"], ".served": sys.modules[__name__], ".served.scorer": scorer}
    for suffix, module in own.items():
        sys.modules.setdefault(PACKAGE + suffix, module)
