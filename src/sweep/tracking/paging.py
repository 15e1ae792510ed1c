"""Reading every result of an MLflow search, page after page (MLflow's page tokens).

A cap such as `max_results=5000` is silent: past it, recovery, resume and the answer page would
work on part of the store. Every search that must see all it matches goes through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from mlflow.entities import Experiment, Run
from mlflow.tracking import MlflowClient

#: Results asked for per request (a test makes it small to cross pages with a few runs).
PAGE_SIZE = 1000


def each_run(
    experiments: Sequence[str],
    where: str = "",
    order_by: Sequence[str] = (),
    page_size: int | None = None,
) -> Iterator[Run]:
    """Every run of `experiments` that `where` matches, in `order_by` order, fetched a page at a
    time as the caller reads on (one that stops at the first it wants reads no more pages)."""
    client = MlflowClient()
    token: str | None = None
    while True:
        page = client.search_runs(
            list(experiments),
            where,
            max_results=page_size or PAGE_SIZE,
            order_by=list(order_by) or None,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def all_runs(
    experiments: Sequence[str], where: str = "", order_by: Sequence[str] = ()
) -> list[Run]:
    """`each_run`, read to the end."""
    return list(each_run(experiments, where, order_by))


def first_run(
    experiments: Sequence[str], where: str, order_by: Sequence[str], wanted: Callable[[Run], bool]
) -> Run | None:
    """The first run in `order_by` order that matches `where` and `wanted` (a test MLflow's
    search cannot express), reading only as many pages as it takes."""
    return next((run for run in each_run(experiments, where, order_by) if wanted(run)), None)


def all_experiments() -> list[Experiment]:
    """Every active experiment of the store."""
    client = MlflowClient()
    found: list[Experiment] = []
    token: str | None = None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found
