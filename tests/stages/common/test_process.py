"""The stage process (stages/common/process.py) with a model-free stage: no message kills it, it exits fast
on SIGTERM, and it lives and dies with the launcher *process*, not with the thread that started it."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import msgpack
import pytest

from ipc import framing
from ipc.endpoints import RunDir
from ipc.schema import Error, Ready, Request
from ipc.sockets import SocketFactory
from tests.stages.common.echo_stage import args_for, start_from_thread

DEADLINE_S = 10.0  # generous bound for things that take milliseconds (start-up imports torch: seconds)
EXIT_S = 2.0  # a stage told to stop (or orphaned) must be gone within this


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait on a process's pidfd (readable when it ends): no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture()
def stage():
    """An echo stage started from a short-lived thread of this process; yields (process, in, out)."""
    with RunDir() as rd, SocketFactory() as sockets:
        args = args_for(str(rd.path))
        control = sockets.socket("PULL", args.control_endpoint)
        out = sockets.socket("PULL", args.output_endpoint)
        proc = start_from_thread(args)  # the spawning thread has ended by now
        try:
            assert control.poll(int(DEADLINE_S * 1000)), "no ready from the stage"
            assert isinstance(framing.recv(control), Ready)
            push = sockets.socket("PUSH", args.input_endpoint)
            yield proc, push, out
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


def recv(out):
    assert out.poll(int(DEADLINE_S * 1000)), "nothing came out of the stage"
    return framing.recv(out)


def test_garbage_and_a_failing_handle_do_not_kill_the_stage(stage):
    proc, push, out = stage
    good = framing.encode(Request(rid="r1", text="hi", params={}))
    for i in range(2000):  # random bytes, truncated MessagePack, wrong types, unknown kinds, huge rid
        kind = i % 5
        frames = ([os.urandom(i % 64 + 1)] if kind == 0 else [bytes(good[0])[: i % len(good[0])]] if kind == 1 else
                  [msgpack.packb({"v": 1, "kind": "request", "rid": 5, "seq": 0, "ts": 0.0, "text": 1, "params": {}})]
                  if kind == 2 else [msgpack.packb({"v": 1, "kind": "nonsense"})] if kind == 3 else
                  [msgpack.packb({"v": 1, "kind": "cancel", "rid": "x" * 1000, "seq": 0, "ts": 0.0, "tensors": []})])
        push.send_multipart(frames)
    framing.send(push, Request(rid="bad", text="boom", params={}))  # handle() raises for this one
    framing.send(push, Request(rid="r1", text="hi", params={}))
    err = recv(out)
    assert isinstance(err, Error) and err.rid == "bad" and err.stage == "echo" and "boom" in err.message
    ok = recv(out)
    assert isinstance(ok, Request) and ok.rid == "r1"
    assert proc.is_alive()


def test_sigterm_exits_at_once_with_status_0(stage):
    proc, push, out = stage
    framing.send(push, Request(rid="r", text="hi", params={}))
    assert recv(out).rid == "r"  # the stage started from an ended thread and is still serving
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert wait_exit(proc.pid, EXIT_S), "the stage did not exit on SIGTERM"
    proc.join(1)
    assert proc.exitcode == 0 and time.monotonic() - t0 < EXIT_S


def test_stage_dies_with_the_launcher_process():
    with RunDir() as rd, SocketFactory() as sockets:
        control = sockets.socket("PULL", args_for(str(rd.path)).control_endpoint)
        launcher = subprocess.Popen([sys.executable, "-m", "tests.stages.common.echo_stage", str(rd.path)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=os.getcwd())
        try:
            pid = int(launcher.stdout.readline())
            assert control.poll(int(DEADLINE_S * 1000)) and isinstance(framing.recv(control), Ready)
            assert not wait_exit(pid, 0.2)  # alive although the thread that spawned it has ended
            launcher.kill()
            launcher.wait(5)
            assert wait_exit(pid, EXIT_S), "the stage outlived its launcher"
        finally:
            if launcher.poll() is None:
                launcher.kill()
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, UnboundLocalError):
                pass
