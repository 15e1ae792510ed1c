"""The sweep's processes in a soak: one chief and K workers, each `python -m sweep` with the same
command but its role, in a process group of its own, its output in a log file per start. The
crew starts, signals and restarts them, and says which ended when nobody meant them to."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHIEF = "chief"


@dataclass
class Member:
    """One process of the crew: the chief, or a worker under its `distributed.worker_id`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False  # SIGSTOPped now
    ended: bool = False  # exited, and the exit dealt with
    started: float = field(default_factory=time.monotonic)


@dataclass
class Crew:
    """A chief and workers started from one command line (`args`), with `env`, under `work`."""

    work: Path
    args: Sequence[str]
    env: dict[str, str]
    oracle: str  # HOST:PORT the chief serves on
    members: dict[str, Member] = field(default_factory=dict)
    starts: int = 0

    def start(self, name: str) -> Member:
        """Start the chief (`CHIEF`) or the worker `name` (a restart reuses a name)."""
        role = (
            ["distributed.role=chief"]
            if name == CHIEF
            else ["distributed.role=worker", f"distributed.worker_id={name}"]
        )
        self.starts += 1
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{self.starts:03d}-{name}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sweep", *self.args, *role],
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.members[name] = Member(name, process, log_path)
        return self.members[name]

    def workers(self) -> list[str]:
        """Workers running now (not ended, not stopped)."""
        return [
            m.name
            for m in self.members.values()
            if m.name != CHIEF and not m.ended and not m.stopped and m.process.poll() is None
        ]

    def kill(self, name: str) -> None:
        """SIGKILL a member (and its group) and wait for it: an exit this crew meant."""
        member = self.members[name]
        _signal(member.process, signal.SIGKILL)
        member.process.wait()
        member.ended = True
        member.stopped = False

    def pause(self, name: str) -> None:
        member = self.members[name]
        _signal(member.process, signal.SIGSTOP)
        member.stopped = True

    def resume(self, name: str) -> None:
        member = self.members[name]
        _signal(member.process, signal.SIGCONT)
        member.stopped = False

    def exits(self) -> list[tuple[Member, int]]:
        """Members that ended since the last look, unmeant, with their exit codes (each once)."""
        found = []
        for member in self.members.values():
            code = member.process.poll()
            if code is not None and not member.ended:
                member.ended = True
                found.append((member, code))
        return found

    def chief_done(self) -> bool:
        """Whether the chief ended the sweep itself (exit 0)."""
        chief = self.members.get(CHIEF)
        return chief is not None and chief.process.poll() == 0

    def chief_serving(self) -> bool:
        """Whether the chief's oracle port takes connections (a restarted chief serves once it
        has reloaded the sweep), or the chief has ended the sweep."""
        host, _, port = self.oracle.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return self.chief_done()

    def close(self, grace_s: float = 30.0) -> None:
        """Stop every process still running: SIGINT (each closes its open run), then SIGKILL."""
        running = [m for m in self.members.values() if m.process.poll() is None]
        for member in running:
            _signal(member.process, signal.SIGCONT)
            _signal(member.process, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for member in running:
            try:
                member.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(member.process, signal.SIGKILL)
                member.process.wait()


def last_words(path: Path, lines: int = 1) -> str:
    """The last non-blank lines of a log, for a line about a process that ended."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    found = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(found[-lines:])[:400]


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal a member's process group (it started one: `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
