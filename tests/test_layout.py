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
    ("sweep.export", "sweep.ensemble"): "a final evaluation trains; exporting alone needs no Keras",
    ("sweep.distributed.__main__", "sweep.distributed"): "`serve` starts without TensorFlow",
    ("sweep.__main__", "sweep"): "a refused command line is answered before TensorFlow loads",
    ("sweep.__main__", "sweep.distributed.launcher"): "the same",
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


@pytest.mark.slow
def test_the_tuner_type_checks_with_nothing_ignored(tmp_path: Path) -> None:
    """`sweep.tuner` extends Keras Tuner's untyped internals: its oracles and tuners are typed by
    the base classes that declare them (`KerasOracle`, `TrialTracking`), its roles by `Role`.
    mypy (pyproject's [tool.mypy]) finds no error there, and no `# type: ignore` hides one.
    Its cache in tmp_path, as cold as a clean clone's: ~4 s of CPU (13 s before pyproject read
    MLflow's server, stores and their libraries as Any)."""
    tuner = PACKAGE / "tuner"
    ignored = [
        f"{path.name}:{number}"
        for path in sorted(tuner.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line
    ]
    assert not ignored, ignored
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), str(tuner)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert result.stdout.startswith("Success: no issues found"), result.stdout


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
    orchestrator, `tuner.search.run`, takes its next step (18 returns before, counted here; 7 now):
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
    # 5 before issue 22 and 23; +1 the confirmation stage (a step of its own after the
    # repeats), +1 the role finding its parent run (Alone.existing_parent) before the search
    assert returns_along(nouns) <= 7, stays


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


#: Where the harness's record is spelled: every tag name, the config keys that are no part of a
#: trial, the searchable sections (issue 23: each decision in one place).
VOCABULARY = PACKAGE / "vocabulary.py"
#: A search filter naming a tag: tags.NAME or tags.`NAME`.
TAG_FILTER = re.compile(r"tags\.`?([\w.]+?)`?(?:\s|$|=|!)")


def tag_names() -> set[str]:
    """Every tag name the vocabulary defines (a `..._TAG` or `..._TAG_PREFIX` constant)."""
    tree = ast.parse(VOCABULARY.read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        targets = [t for target in node.targets for t in ast.walk(target)]
        if any(isinstance(t, ast.Name) and "_TAG" in t.id for t in targets):
            names |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return {name for name in names if isinstance(name, str)}


def config_key_lists() -> set[str]:
    """The config keys and sections the vocabulary lists (NOT_TRIAL, SEARCHABLE), with and
    without a trailing dot."""
    tree = ast.parse(VOCABULARY.read_text())
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("NOT_TRIAL", "SEARCHABLE") for t in node.targets
        ):
            keys |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return keys | {f"{key}." for key in keys}


def _named(node: ast.AST) -> str:
    """The name an expression is read by: `tags`, `run.data.tags` -> tags; else ''."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _strings(node: ast.AST | None) -> list[ast.Constant]:
    """The string constants in `node` (None: a dict's `**` entry)."""
    if node is None:
        return []
    return [c for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]


def _tag_places(tree: ast.Module) -> Iterable[ast.Constant]:
    """String constants where a tag is named or written or read: a module's constants,
    arguments of a call that sets tags, `tags=` arguments, keys of a dict assigned to (or
    returned as) tags, and the key of `tags[...]`, `tags.get(...)` or `... in tags`."""
    for statement in tree.body:  # NAME = "..." or A, B = "...", "..."
        if isinstance(statement, ast.Assign):
            target, value = statement.targets[0], statement.value
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                yield from (c for c in value.elts if isinstance(c, ast.Constant))
            elif isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                yield value
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if "tag" in _named(node.func).lower():
                yield from (c for arg in node.args for c in _strings(arg))
            yield from (c for k in node.keywords if k.arg == "tags" for c in _strings(k.value))
            reader = node.func
            if isinstance(reader, ast.Attribute) and reader.attr == "get" and node.args:
                yield from _strings(node.args[0]) if "tags" in _named(reader.value) else ()
        elif isinstance(node, ast.Subscript) and "tags" in _named(node.value):
            yield from _strings(node.slice)
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            if "tags" in _named(node.comparators[0]):
                yield from _strings(node.left)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any("tags" in _named(t) for t in targets):
                yield from (c for key in node.value.keys for c in _strings(key))
        elif isinstance(node, ast.FunctionDef) and "tag" in node.name:
            returned = [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
            yield from (
                c for v in returned if isinstance(v, ast.Dict) for k in v.keys for c in _strings(k)
            )


def spelled_out(source: str, tags: set[str], keys: set[str]) -> list[str]:
    """Where `source` spells a tag name itself (where tags are set or read, or in a search
    filter) or lists two or more of the vocabulary's config keys (a second list of them)."""
    tree = ast.parse(source)
    found = [f"line {c.lineno}: tag {c.value!r}" for c in _tag_places(tree) if c.value in tags]
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for constant in _strings(tree):
        if id(constant) in docstrings:
            continue
        for name in TAG_FILTER.findall(constant.value + " "):
            if name in tags:
                found.append(f"line {constant.lineno}: filter on tag {name!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            listed = [c.value for c in node.elts if isinstance(c, ast.Constant)]
            if sum(value in keys for value in listed) >= 2:
                found.append(f"line {node.lineno}: config keys {listed}")
    return found


def test_a_tag_or_config_key_list_spelled_outside_the_vocabulary_is_found() -> None:
    tags, keys = {"trial_id", "seed", "mlflow.parentRunId"}, {"tracking", "data.path", "data."}
    source = '''
TRIAL = "trial_id"

def trial_tags(run, client, x):
    """Reads tags.seed = 1 in words only."""
    client.set_tag(run, "trial_id", "1")
    tags = {"seed": "1", "other": "2"}
    x = run.data.tags.get("trial_id"), run.data.tags["seed"], "seed" in run.data.tags
    start(tags={"trial_id": "3"})
    where = f"tags.mlflow.parentRunId = '{run}' and tags.`trial_id` = '1'"
    return {"seed": x}

HARNESS = ("tracking", "data.path", "name")
SECTIONS = ("data.", "model.")
NOISY = ("sweep", "trial_id")  # logger names, say: not one constant per name

def row():
    return {"seed": 1, "trial_id": 2}  # a table's columns, not tags
'''
    found = spelled_out(source, tags, keys)
    assert sorted(int(line.split(":")[0].split()[1]) for line in found) == [
        *(2, 6, 7, 8, 8, 8, 9, 10, 10, 11, 13)
    ], found
    assert spelled_out("x = {'seed': 1}\nSECTIONS = ('data.',)\n", tags, keys) == []


def test_tag_names_and_config_keys_are_spelled_in_the_vocabulary_only() -> None:
    """A tag read under one spelling and written under another is a record that says nothing;
    two lists of the config's non-trial keys drift apart (three had, before issue 23)."""
    tags, keys = tag_names(), config_key_lists()
    assert {"trial_id", "mlflow.parentRunId", "replicate_of", "stop_reason"} <= tags
    assert {"tracking", "data.path", "search.replicates", "model."} <= keys
    paths = [p for _, p in _modules() if p != VOCABULARY]
    paths += sorted((ROOT / "benchmarks").rglob("*.py"))
    spelled = {
        str(path.relative_to(ROOT)): found
        for path in paths
        if (found := spelled_out(path.read_text(), tags, keys))
    }
    assert not spelled, spelled
