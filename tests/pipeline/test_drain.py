"""`serve` under signals and stage deaths: SIGTERM drains (in-flight requests finish, exit 0, nothing left behind),
a drain timeout fails the rest with `shutting down`, a spent restart budget exits non-zero."""
import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.client import RemoteClient, RemoteError

from .conftest import CLI, children_of

FAST = {"n_timesteps": 2}


class Serve:
    """`tts-pipeline serve` in a private TMPDIR (so its run directory can be checked), endpoints read from stderr."""

    def __init__(self, tmp_path: Path, *args: str):
        self.run_base = tmp_path
        env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*CLI, "serve", "--threads", "1", *args], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, env=env, text=True)
        self.lines: list[str] = []
        self.endpoints: dict[str, str] = {}
        for line in self.proc.stderr:
            self.lines.append(line)
            if m := re.match(r"(requests|publish): (\S+)", line):
                self.endpoints[m.group(1)] = m.group(2)
            if line.startswith("serving"):
                break
        assert len(self.endpoints) == 2, "".join(self.lines)
        self.stages = {Path(f"/proc/{pid}/comm").read_text().strip(): pid for pid in children_of(self.proc.pid)
                       if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().startswith("tts-")}
        assert set(self.stages) == {"tts-t3", "tts-cfm", "tts-hifigan"}

    def client(self) -> RemoteClient:
        return RemoteClient(self.endpoints["requests"], self.endpoints["publish"])

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Exit status and the rest of stderr; checks that no stage process and no run directory is left."""
        try:
            rest = self.proc.communicate(timeout=timeout)[1]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for pid in self.stages.values():  # a stage outliving its server by more than a moment is an orphan
            assert exits_within(pid, 5.0), f"stage process {pid} outlived the server"
        assert list(self.run_base.glob("tts-*")) == [], "run directory left behind"
        return self.proc.returncode, "".join(self.lines) + rest


def exits_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` (not our child: the server's) exits within `timeout` s, waited on with a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone already
    try:
        return bool(select.select([fd], [], [], timeout)[0])  # readable once the process has exited
    finally:
        os.close(fd)


def run_requests(server: Serve, n: int, params: dict, started: threading.Barrier, results: list) -> list[threading.Thread]:
    """n requests in threads (one client each); each waits at `started` after its first chunk, then reads to the end."""
    def one(i: int) -> None:
        got, first, ended = 0, True, None
        try:
            with server.client() as client:
                for msg in client.stream(f"Request number {i}.", seed=i, **params):
                    got += int(msg.pcm.shape[0])
                    if first:
                        first = False
                        started.wait(60)
                ended = time.monotonic()
            results.append((i, got, ended, None))
        except (RemoteError, threading.BrokenBarrierError) as e:
            results.append((i, got, time.monotonic(), str(e)))
            if first:
                started.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def test_sigterm_with_4_in_flight_lets_them_finish_and_exits_0(tmp_path):
    # a drain timeout far above the work: this test is about completing, not about the timeout
    server = Serve(tmp_path, "--drain-timeout", "300")
    started, results = threading.Barrier(5), []
    threads = run_requests(server, 4, {"ignore_eos": True, "max_new_tokens": 300, **FAST}, started, results)
    started.wait(120)  # all four have their first chunk: in flight
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(300)
    code, err = server.finish()
    assert code == 0, err
    assert "draining" in err and "stopped" in err
    assert sorted((i, got, e) for i, got, _, e in results) == [(i, 960 * 300, None) for i in range(4)]
    assert max(ended for _, _, ended, _ in results) > signalled  # they were still running when the signal came


def test_a_drain_timeout_shorter_than_the_work_fails_the_rest_with_shutting_down(tmp_path):
    server = Serve(tmp_path, "--drain-timeout", "0.05")
    started, results = threading.Barrier(3), []
    threads = run_requests(server, 2, {"ignore_eos": True, "max_new_tokens": 1400, **FAST}, started, results)
    started.wait(120)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    code, err = server.finish()
    assert code == 0, err
    assert len(results) == 2 and all(e is not None and e.startswith("pipeline: shutting down") for _, _, _, e in results), results
    assert all(0 < got < 960 * 1400 for _, got, _, _ in results)


def test_a_silent_server_times_the_client_out_and_a_spent_budget_exits_non_zero(tmp_path):
    server = Serve(tmp_path, "--restart-budget", "0")
    # the server goes silent mid-request (stopped, as a hung or unreachable host would be): the client gives up clearly
    with RemoteClient(server.endpoints["requests"], server.endpoints["publish"], idle_timeout_s=1.0) as client:
        stream = client.stream("A long one.", seed=1, ignore_eos=True, max_new_tokens=1400, **FAST)
        next(stream)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RemoteError, match=r"^no message from the server for 1 s \(it stopped, or is unreachable\)"):
                for _ in stream:
                    pass
        finally:
            server.proc.send_signal(signal.SIGCONT)
    # a stage dies with no restart left: one line, exit 1, nothing left behind
    pid = server.stages["tts-hifigan"]
    os.kill(pid, signal.SIGKILL)
    code, err = server.finish()
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines == [f"error: unhealthy: stage hifigan (pid {pid}) died (exit code -9); "
                     "0 restart(s) within 60 s already (budget 0): giving up"], err
    assert "Traceback" not in err


def test_a_killed_servers_run_directory_is_cleaned_on_the_next_start(tmp_path):
    from ipc.endpoints import Endpoints

    dead = subprocess.Popen(["sleep", "0"])  # a pid that has certainly ended
    dead.wait()
    left = tmp_path / "tts-killed1"
    left.mkdir(mode=0o700)
    (left / "t3.sock").write_bytes(b"")
    (left / "owner").write_text(f"{dead.pid}\n")
    alive = tmp_path / "tts-running1"  # a live server's (this process): kept
    alive.mkdir(mode=0o700)
    (alive / "owner").write_text(f"{os.getpid()}\n")
    eps = Endpoints("ipc", run_base=str(tmp_path))
    try:
        assert not left.exists() and alive.exists() and eps.run_dir.path.exists()
        assert (eps.run_dir.path / "owner").read_text().split()[0] == str(os.getpid())
    finally:
        eps.close()
