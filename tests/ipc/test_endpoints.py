"""Endpoints live in a private run directory that is gone once the factory closes; sockets never hang on close."""
import os
import stat

import pytest

from ipc import framing
from ipc.endpoints import EndpointError, Endpoints, RunDir
from ipc.schema import Cancel
from ipc.sockets import SocketFactory


def test_no_endpoint_files_remain_after_close():
    endpoints = Endpoints("ipc")
    run_dir = endpoints.run_dir.path
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700  # private to this user
    with SocketFactory(endpoints) as f:
        pull = f.socket("PULL", f.endpoint("a"))
        push = f.socket("PUSH", f.endpoint("a"))
        f.socket("PUB", f.endpoint("b"))
        framing.send(push, Cancel(rid="r", seq=0))
        assert isinstance(framing.recv(pull), Cancel)
        assert any(run_dir.iterdir())
    assert not run_dir.exists()


def test_close_does_not_hang_with_undeliverable_messages():
    # A PUSH connected to nobody holds its messages; close must still return (bounded linger).
    with SocketFactory(Endpoints("ipc")) as f:
        push = f.socket("PUSH", f.endpoint("nobody"), bind=False)
        for i in range(10):
            framing.send(push, Cancel(rid="r", seq=i))
    # reaching this line is the assertion (pytest would time out otherwise)


def test_long_ipc_path_is_a_clear_error(tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with RunDir(base=deep) as rd:
        with pytest.raises(EndpointError, match="longer than"):
            rd.endpoint("stage")


def test_tcp_endpoints():
    e = Endpoints("tcp", base_port=0)
    assert e("x") == "tcp://127.0.0.1:*"
    e2 = Endpoints("tcp", base_port=7000)
    assert [e2("a"), e2("b"), e2("a")] == ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7000"]
    with pytest.raises(EndpointError):
        Endpoints("udp")
