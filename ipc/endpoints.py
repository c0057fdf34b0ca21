"""Endpoints: `ipc://` sockets in a private per-run directory (removed at shutdown), or `tcp://` when configured."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# A Unix socket path must fit sun_path (108 bytes on Linux, including the NUL).
MAX_IPC_PATH_BYTES = 107
TRANSPORTS = ("ipc", "tcp")


class EndpointError(ValueError):
    """An endpoint cannot be made (path too long, unknown transport, ...)."""


OWNER_FILE = "owner"  # "<pid> <start time>" of the process that made a run directory


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def remove_stale_run_dirs(base: str | os.PathLike, prefix: str = "tts-") -> list[Path]:
    """Remove run directories under `base` left by a server that was killed (SIGKILL, OOM): ours, with an owner that is gone.

    A directory counts as stale only when it belongs to this user and its owner file names a
    process that no longer runs (or a different process that reused the pid); one without an
    owner file is left alone.
    """
    removed = []
    try:
        candidates = list(Path(base).glob(f"{prefix}*"))
    except OSError:
        return removed
    for d in candidates:
        try:
            if not d.is_dir() or d.is_symlink() or d.stat().st_uid != os.getuid():
                continue
            fields = (d / OWNER_FILE).read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            continue
        started = fields[1] if len(fields) > 1 else None
        alive = Path(f"/proc/{pid}").exists() and (started is None or _start_time(pid) == started)
        if not alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class RunDir:
    """A private directory holding one run's `ipc://` socket files; removed by `close()`.

    Made with mode 0700 under `base` (default: $TMPDIR, falling back to /tmp when
    $TMPDIR is so long that socket paths would not fit).
    """

    def __init__(self, base: str | os.PathLike | None = None, prefix: str = "tts-"):
        if base is None:
            base = tempfile.gettempdir()
            if len(os.fsencode(base)) > 40:  # leave room for "/tts-xxxxxxxx/<name>.sock"
                base = "/tmp"
        remove_stale_run_dirs(base, prefix)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))  # mkdtemp: mode 0700, unique
        (self.path / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")

    def endpoint(self, name: str) -> str:
        path = self.path / f"{name}.sock"
        if len(os.fsencode(str(path))) > MAX_IPC_PATH_BYTES:
            raise EndpointError(
                f"ipc socket path {path} is longer than {MAX_IPC_PATH_BYTES} bytes; use a shorter --run-dir base or tcp"
            )
        return f"ipc://{path}"

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Endpoints:
    """Names -> endpoint strings for one run, on one transport.

    ipc: one socket file per name in a RunDir. tcp: `tcp://HOST:PORT` with consecutive
    ports from `base_port` in the order names are first asked for, or, with base_port 0,
    `tcp://HOST:*` (the binder picks a free port; read the bound address back from the socket).
    """

    def __init__(self, transport: str = "ipc", host: str = "127.0.0.1", base_port: int = 0, run_base: str | None = None):
        if transport not in TRANSPORTS:
            raise EndpointError(f"unknown transport {transport!r} (expected one of {', '.join(TRANSPORTS)})")
        self.transport, self.host, self.base_port = transport, host, base_port
        self.run_dir = RunDir(run_base) if transport == "ipc" else None
        self._ports: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        if self.run_dir is not None:
            return self.run_dir.endpoint(name)
        if self.base_port == 0:
            return f"tcp://{self.host}:*"
        port = self._ports.setdefault(name, self.base_port + len(self._ports))
        return f"tcp://{self.host}:{port}"

    def close(self) -> None:
        if self.run_dir is not None:
            self.run_dir.close()
