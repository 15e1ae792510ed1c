"""`python -m sweep.report [report.experiments=[A,B]] [key=value ...]`."""

from sweep import cli
from sweep.report.job import report


def main() -> None:
    cli.main(report, trains=False)  # a report trains nothing


if __name__ == "__main__":
    main()
