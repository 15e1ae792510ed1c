"""Each kind of fault, made real: signals to the sweep's processes, stops and starts of its
servers. A fault is timed as it lands (wall-clock, as MLflow times runs) and waits, supervising
the crew meanwhile, until what it broke is running again: a stopped worker resumed, a killed
process started again, a server answering. The next fault's wait starts after that."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.soak.crew import CHIEF, Crew
from benchmarks.soak.faults import (
    CHIEF_KILL,
    MLFLOW_RESTART,
    POSTGRES_RESTART,
    WORKER_KILL,
    WORKER_STOP,
    Fault,
)
from benchmarks.soak.services import LoginServer, Postgres

log = logging.getLogger(__name__)

#: How long a stopped worker stays stopped, in heartbeat timeouts: past the timeout, and past
#: the chief's next check for silence (every fifth of it), so its trial is taken back.
STOP_TIMEOUTS = (1.5, 2.5)
#: Stops tried until one lands on a worker with a trial going on, and the seconds between.
STOP_TRIES, STOP_AGAIN_S = 5, 0.5
#: How long a chief kill waits for a worker to have a trial going on.
CHIEF_WAIT_S = 30.0
#: Seconds a killed process or a stopped server stays down before it is started again.
DOWN_S = (0.0, 3.0)
#: How long a restarted chief or MLflow server may take to serve again (each imports its
#: libraries first: TensorFlow, MLflow).
BACK_S = 300.0


@dataclass
class Injector:
    """Makes faults of every kind happen to a soak's processes and servers.

    `wait(seconds)` and `wait_until(predicate, seconds)` pass time while the runner supervises
    the crew; `busy()` names the workers with a trial run going on (the victims that matter).
    """

    crew: Crew
    server: LoginServer
    postgres: Postgres | None
    heartbeat_s: float
    wait: Callable[[float], None]
    wait_until: Callable[[Callable[[], bool], float, str], None]
    busy: Callable[[], set[str]]
    new_workers: int = 0
    kills: int = 0
    _kinds: dict[str, Callable[[random.Random], Fault | None]] = field(init=False)

    def __post_init__(self) -> None:
        self._kinds = {
            WORKER_KILL: self.kill_worker,
            WORKER_STOP: self.stop_worker,
            CHIEF_KILL: self.kill_chief,
            MLFLOW_RESTART: self.restart_mlflow,
            POSTGRES_RESTART: self.restart_postgres,
        }

    def inject(self, kind: str, rng: random.Random) -> Fault | None:
        """One fault of `kind`, its choices drawn from `rng`; None when it found nothing to hit
        (no worker running)."""
        fault = self._kinds[kind](rng)
        if fault is not None:  # said once it is over, with when it landed
            landed = time.strftime("%H:%M:%S", time.localtime(fault.at))
            target = f" on {fault.target}" if fault.target else ""
            log.info("fault %s%s at %s: %s", fault.kind, target, landed, fault.detail)
        return fault

    def _victim(self, rng: random.Random) -> str | None:
        """A running worker, one with a trial going on where there is one."""
        running = sorted(self.crew.workers())
        busy = [w for w in running if w in self.busy()]
        pool = busy or running
        return rng.choice(pool) if pool else None

    def kill_worker(self, rng: random.Random) -> Fault | None:
        """SIGKILL a worker, then start a worker again: every other time under the same id (it
        takes its trial back), else under a new one (the dead one's trial waits for the
        heartbeat timeout, then goes to whoever asks), starting with a new one."""
        victim = self._victim(rng)
        if victim is None:
            return None
        self.kills += 1
        same = self.kills % 2 == 0
        down = rng.uniform(*DOWN_S)
        at = time.time()
        self.crew.kill(victim)
        self.wait(down)
        if self.crew.chief_done():  # a worker started now would wait for a chief that is gone
            return Fault(WORKER_KILL, at, victim, "SIGKILL; the sweep ended meanwhile")
        name = victim if same else self._new_name()
        self.crew.start(name)
        return Fault(WORKER_KILL, at, victim, f"SIGKILL; {down:.1f} s later started {name}")

    def _new_name(self) -> str:
        self.new_workers += 1
        return f"worker-n{self.new_workers}"

    def stop_worker(self, rng: random.Random) -> Fault | None:
        """SIGSTOP a worker past the heartbeat timeout, then SIGCONT it. A stop that lands
        between the victim's trials (its run ended as it was picked: tiny trials are short) is
        undone at once and tried again, up to STOP_TRIES times: it would stop no trial."""
        for attempt in range(STOP_TRIES):
            victim = self._victim(rng)
            if victim is None:
                return None
            at = time.time()
            self.crew.pause(victim)
            if attempt == STOP_TRIES - 1 or victim in self.busy():
                break
            self.crew.resume(victim)
            self.wait(STOP_AGAIN_S)
        hold = self.heartbeat_s * rng.uniform(*STOP_TIMEOUTS)
        try:
            self.wait(hold)
        finally:
            self.crew.resume(victim)
        return Fault(WORKER_STOP, at, victim, f"SIGSTOP for {hold:.1f} s, then SIGCONT")

    def kill_chief(self, rng: random.Random) -> Fault | None:
        """SIGKILL the chief and start it again with the same command; back once it serves.
        It lands while a trial is going on (waiting up to CHIEF_WAIT_S for one): a chief killed
        while every worker is between trials gives no trial back, which is what it tests."""
        with contextlib.suppress(TimeoutError):
            self.wait_until(lambda: bool(self.busy()), CHIEF_WAIT_S, "a trial going on")
        crew = self.crew
        return self._down_and_back(
            CHIEF_KILL, rng, lambda: crew.kill(CHIEF), lambda: crew.start(CHIEF), crew.chief_serving
        )

    def restart_mlflow(self, rng: random.Random) -> Fault | None:
        """Stop the MLflow server (SIGTERM to its processes) and start it again; back once it
        answers."""
        server = self.server
        return self._down_and_back(
            MLFLOW_RESTART, rng, server.stop, lambda: server.start(wait_s=None), server.answers
        )

    def _down_and_back(
        self,
        kind: str,
        rng: random.Random,
        stop: Callable[[], None],
        start: Callable[[], None],
        back: Callable[[], bool],
    ) -> Fault:
        """Stop a process, leave it down a seeded moment, start it, wait until it is `back`."""
        down = rng.uniform(*DOWN_S)
        at = time.time()
        stop()
        self.wait(down)
        started = time.time()
        start()
        self.wait_until(back, BACK_S, f"{kind}: back")
        took = time.time() - started
        return Fault(
            kind, at, None, f"stopped, {down:.1f} s down, back {took:.1f} s after its start"
        )

    def restart_postgres(self, rng: random.Random) -> Fault | None:
        """Stop PostgreSQL (a clean `fast` shutdown, or `immediate`: as a crash) and start it."""
        if self.postgres is None:
            return None
        mode = rng.choice(("fast", "immediate"))
        down = rng.uniform(*DOWN_S)
        at = time.time()
        self.postgres.stop(mode)
        self.wait(down)
        self.postgres.start()
        return Fault(POSTGRES_RESTART, at, None, f"pg_ctl stop -m {mode}, {down:.1f} s down")
