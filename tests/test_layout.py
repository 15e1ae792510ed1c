"""The house rules, checked by machine: dependencies point one way (import-linter's contracts in
pyproject.toml), modules and functions stay small, no import hides inside a function to dodge a
cycle, and a sweep's config reads through the package top to bottom."""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sweep"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
#: Imports of the package's own modules made inside a function, and why each is not a cycle
#: dodge: the module it loads is heavy (Keras) and only some runs of the caller need it.
LAZY_ON_PURPOSE = {
    ("sweep.export", "sweep.train"): "a final evaluation trains; exporting alone needs no Keras",
    ("sweep.distributed.__main__", "sweep.distributed"): "`serve` starts without TensorFlow",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def test_the_dependency_contracts_hold() -> None:
    # its own process: import-linter configures logging (it disables loggers that exist)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def _too_long(modules: Iterable[tuple[str, Path]]) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES, named."""
    too_long = []
    for name, path in modules:
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    return too_long


def test_modules_and_functions_stay_small() -> None:
    too_long = _too_long(_modules())
    assert not too_long, too_long


def test_benchmark_modules_and_functions_stay_small() -> None:
    """benchmarks/ keeps the package's size rules too (issue 21: it had grown into one
    994-line script); its layers are a contract in pyproject.toml."""
    paths = sorted((ROOT / "benchmarks").rglob("*.py"))
    too_long = _too_long((str(path.relative_to(ROOT)), path) for path in paths)
    assert not too_long, too_long


def test_no_import_of_the_package_hides_in_a_function() -> None:
    hidden = []
    for name, path in _modules():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sweep"):
                    if (name, node.module) not in LAZY_ON_PURPOSE:
                        hidden.append(f"{name}.{function.name} imports {node.module}")
                elif isinstance(node, ast.Import):
                    hidden += [
                        f"{name}.{function.name} imports {alias.name}"
                        for alias in node.names
                        if alias.name.startswith("sweep")
                    ]
    assert not hidden, hidden


def returns_along(path: list[str]) -> int:
    """How often a path of modules comes back to one it had already left."""
    stays = [module for module, _ in itertools.groupby(path)]
    return sum(1 for i, module in enumerate(stays) if module in stays[:i])


def test_returns_are_counted_along_a_path() -> None:
    assert returns_along(["a", "a", "b", "c"]) == 0
    assert returns_along(["a", "b", "a", "b", "c", "a"]) == 3


def layer_ranks() -> dict[str, int]:
    """Each top-level module's layer in the contract, 0 for the top."""
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in contract["contracts"] if c["type"] == "layers")["layers"]
    return {name.strip(): rank for rank, line in enumerate(layers) for name in line.split("|")}


@pytest.mark.slow
def test_a_sweeps_config_reads_top_to_bottom(
    make_sweep: Callable[..., DictConfig],
) -> None:
    """Follow the sweep's config from `python -m sweep`'s entry: every call that gets it (or a
    section of it) as an argument goes down the layers, never back up (before issue 15's layout
    the path climbed 15 times), and the modules it enters come back only where the sweep's
    orchestrator, `tuner.search.run`, takes its next step (18 returns before, counted here):
    the space is checked once into a `SearchSpace` and the standing read once into a
    `Standing`, so no trial hands the config down again."""
    from sweep.__main__ import run

    cfg = make_sweep(
        {"model.attention.output_dim": {"type": "choice", "values": [4, 8]}},
        "search.tuner=grid",
        "train.epochs=1",
    )
    calls: list[tuple[str, str]] = []  # (caller, callee) by top-level module

    def follow(frame, event, arg):
        callee = frame.f_globals.get("__name__", "")
        if event != "call" or not callee.startswith("sweep."):
            return
        if any(
            isinstance(value, DictConfig) and value._get_root() is cfg
            for value in frame.f_locals.values()
        ):
            caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
            calls.append((caller.split(".")[1] if "." in caller else caller, callee.split(".")[1]))

    sys.setprofile(follow)
    try:
        run(cfg)
    finally:
        sys.setprofile(None)
    rank = layer_ranks()
    climbs = [(a, b) for a, b in calls if a in rank and b in rank and rank[b] < rank[a]]
    nouns = [callee for _, callee in calls]
    stays = [noun for noun, _ in itertools.groupby(nouns)]
    print(f"config path ({returns_along(nouns)} returns):", " > ".join(stays))  # shown with -s
    assert {"config", "tuner", "space", "train", "tracking"} <= set(stays), stays
    assert not climbs, climbs
    assert returns_along(nouns) <= 5, stays


#: The README is the front door; the manual lives in docs/ (issue 21).
README_MAX_LINES = 150
#: A fenced code block, whose brackets and `#` lines are no links or headings.
FENCED = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)


def documentation_pages() -> list[Path]:
    """The project's own markdown: the README, docs/, and the READMEs of benchmarks and tests."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [*pages, ROOT / "benchmarks" / "README.md", ROOT / "tests" / "README.md"]


def markdown_links(text: str) -> list[str]:
    """The targets of a page's links and images, outside code."""
    prose = re.sub(r"`[^`\n]*`", "", FENCED.sub("", text))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose)


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (a repeated heading's -1, -2 left out)."""
    headings = re.findall(r"^#{1,6} +(.+?) *#*$", FENCED.sub("", text), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_and_anchors_are_read_as_github_does() -> None:
    page = (
        "# A `python -m x.y` page\n[a](b.md#c) ![i](img/i.png) `[no](link)`\n"
        "```bash\n# no heading\n[no](link)\n```\n"
    )
    assert markdown_links(page) == ["b.md#c", "img/i.png"]
    assert heading_anchors(page) == {"a-python--m-xy-page"}


def test_the_readme_stays_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the manual into docs/"


def test_every_relative_link_in_the_documentation_resolves() -> None:
    broken = []
    for page in documentation_pages():
        for target in markdown_links(page.read_text()):
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):  # https:, mailto:: not checked here
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif (
                anchor
                and linked.suffix == ".md"
                and anchor not in heading_anchors(linked.read_text())
            ):
                broken.append(f"{where}: no such heading")
    assert not broken, broken
