"""Processes the launcher owns: started in their own session, stopped by process id, nothing left behind."""

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class OwnedProcess:
    role: str  # postgresql, job-service, orthanc, nginx
    name: str
    pid: int
    #: The executable's file name, checked before signalling.
    executable: str
    log: str
    #: When the process started (clock ticks since boot, from /proc): with the pid, its identity, so that
    #: a pid reused by another process after a reboot is never signalled.
    start_ticks: int = 0
    #: How it was started, to start it again (``cluster start NAME``).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def group_alive(self) -> bool:
        """Is any process of its session (nginx workers, PostgreSQL backends) still there?"""
        if (
            self.start_ticks
            and (stat := _stat_fields(self.pid)) is not None
            and int(stat[19]) != self.start_ticks
        ):
            return False  # the pid, and so the group id, belongs to someone else now
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def is_running(self) -> bool:
        stat = _stat_fields(self.pid)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or exited and not yet reaped
            return False
        if self.start_ticks and int(stat[19]) != self.start_ticks:
            return False  # another process got the pid
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        if not cmdline:  # between fork and exec
            return True
        argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
        return os.path.basename(argv0) == self.executable or self.executable in cmdline.decode(
            errors="replace"
        )


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state first, start time at index 19."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def inherited_environment() -> dict[str, str]:
    """The launcher's environment, less its own settings: each process gets exactly those it is given."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ORTHANC_JOBS_")}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (configurations hold the shared secret), from its creation on."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def unprivileged_user() -> str | None:
    """The user to run PostgreSQL as, when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for candidate in ("postgres", "nobody"):
        try:
            pwd.getpwnam(candidate)
        except KeyError:
            continue
        return candidate
    raise RuntimeError("running as root and no 'postgres' user to run PostgreSQL as")


def spawn(
    role: str,
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> OwnedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**inherited_environment(), **(env or {})},
            start_new_session=True,
            user=user,
            cwd=cwd,
        )
    stat = _stat_fields(process.pid)
    return OwnedProcess(
        role,
        name,
        process.pid,
        os.path.basename(argv[0]),
        str(log_path),
        start_ticks=int(stat[19]) if stat else 0,
        argv=list(argv),
        env=dict(env or {}),
        user=user,
        cwd=str(cwd) if cwd is not None else None,
    )


def respawn(process: OwnedProcess) -> OwnedProcess:
    """Start a stopped process again, exactly as it was started."""
    return spawn(
        process.role,
        process.name,
        process.argv,
        Path(process.log),
        env=process.env,
        user=process.user,
        cwd=Path(process.cwd) if process.cwd else None,
    )


def run(argv: Sequence[str], *, user: str | None = None, log_path: Path | None = None) -> None:
    """Run a short command to completion; its output goes to the log, and into the error if it fails."""
    result = subprocess.run(list(argv), capture_output=True, user=user, check=False)
    if log_path is not None:
        with open(log_path, "ab") as log:
            log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {output}")


# How each role is asked to stop: PostgreSQL's fast shutdown is SIGINT. nginx gets SIGTERM (fast): a graceful
# SIGQUIT would wait for open event streams (a dashboard left open) to end.
_STOP_SIGNALS = {"postgresql": signal.SIGINT}


def stop(processes: Sequence[OwnedProcess], timeout: float = 20.0) -> list[OwnedProcess]:
    """Ask each process to stop, wait, then kill what is left. Returns those killed by force."""
    for process in processes:
        if process.is_running():
            _signal(process, _STOP_SIGNALS.get(process.role, signal.SIGTERM))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.is_running() for p in processes):
        _reap()
        time.sleep(0.05)
    forced = [p for p in processes if p.is_running()]
    for process in forced:
        _signal(process, signal.SIGKILL)
    # What is left of each session (workers of nginx, backends of PostgreSQL) goes too.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.group_alive() for p in processes):
        _reap()
        time.sleep(0.05)
    for process in processes:
        if process.group_alive():
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
    _reap()
    return forced


def _signal(process: OwnedProcess, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)


def _reap() -> None:
    """Collect exited children of this process (when it is the one that started them)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
