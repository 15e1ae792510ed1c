"""The README's result blocks: each between its own markers, rewritten when the sections it
shows were measured, the rest of the file left as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.sections import bucketing, data, overhead, pipeline, pruning, search, sweeps


def results_markdown(results: dict[str, Any]) -> str:
    """The main block: the machine, the targets table, the sweep and search tables."""
    m = results["machine"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"])
    end = ", ".join(f"{x:.1f}" for x in m["load_average_at_end"])
    lines = [
        f"Measured {m['date']} on {m['cpu']}, **{m['cores']} cores** (load average "
        f"{load} at start, {end} at end: the CPU was shared), Python {m['python']}, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}. "
        f"`{results['command']}` took **{results['total_s'] / 60:.1f} min**.",
        "",
        "| Benchmark | Measured | Target | Met |",
        "|---|---|---|---|",
        *overhead.rows(results["overhead"]),
        *pipeline.rows(results["pipeline"]),
        *data.rows(results["data"]),
        "",
        *sweeps.table(results["sweeps"], results["search"]),
        "",
        *search.table(results["search"]),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Block:
    """One block of the README: its marker name, the sections it needs, how it is written."""

    name: str
    needs: tuple[str, ...]
    render: Callable[[dict[str, Any]], str]

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"


BLOCKS = (
    Block("results", ("data", "overhead", "pipeline", "sweeps", "search"), results_markdown),
    Block("bucketing", ("bucketing",), bucketing.markdown),
    Block("pruning", ("pruning",), pruning.markdown),
)


def write_block(path: Path, block: Block, text: str) -> None:
    """Replace the text between the block's markers (appended where the file has none; a new
    file is just the results)."""
    marked = f"{block.start}\n{text}{block.end}"
    old = path.read_text() if path.exists() else f"# Benchmarks\n\n{block.start}\n{block.end}\n"
    if block.start in old and block.end in old:
        head, _, rest = old.partition(block.start)
        _, _, tail = rest.partition(block.end)
        new = head + marked + tail
    else:
        new = old.rstrip("\n") + "\n\n" + marked + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def report(results: dict[str, Any], readme: Path) -> None:
    """Rewrite the README blocks of the sections measured (the others keep their figures)."""
    for block in BLOCKS:
        if all(section in results for section in block.needs):
            write_block(readme, block, block.render(results))
