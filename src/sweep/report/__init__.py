"""`python -m sweep.report`: one answer page across sibling sweeps (MLflow only, no Keras).

pool      which sweeps pool (same base configuration), their runs as observations
analysis  the shared model (sweep.effects) fitted to the runs; the runs behind each value
answer    one group answered: effects and verdicts, diagnostics, the best configuration
page      the markdown and figures
job       the command: gather, answer, write `reports/answers.md`, log it to MLflow
"""

from sweep.report.job import PAGE, report

__all__ = ["PAGE", "report"]
