"""A chaos soak of distributed sweeps (issue 26): many tiny trials on a chief and K workers on
this machine, logged to an MLflow server with a login on PostgreSQL, while an injector, at
seeded intervals, SIGKILLs a worker (and starts a new one), SIGSTOPs a worker past the heartbeat
timeout and resumes it, kills and restarts the chief, restarts the MLflow server and restarts
PostgreSQL. Bounded in faults and time, loopback only; it stops by itself and cleans up every
process it started. At the end, a ledger (`ledger`) says what became of every trial.

    python -m benchmarks.soak --trials 200 --workers 6 --faults 50 --out soak.json

Modules, top to bottom: `__main__` (the command line), `runner` (one soak: start, inject,
supervise, read the record, stop), `injector` (each kind of fault), `services` (PostgreSQL and
the MLflow server) and `crew` (the chief and workers), `ledger` (the checker), `faults` (fault
records and the seeded plan) and `record` (what MLflow and the oracle hold, as plain values).
"""
