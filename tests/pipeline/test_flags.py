"""Every bad flag is caught before start-up, with click's conventions (exit 2, `Error: Invalid value for '--flag'`).

Most cases run in-process (click's CliRunner) with the stage launcher replaced by a trap, so
"no stage started" is asserted directly; one case runs the real command to check the exit
status, the time it takes and that it leaves no process and no run directory behind.
"""
import os
import subprocess
import time

import pytest
import torch
from click.testing import CliRunner

from pipeline import cli
from pipeline.api import Pipeline
from pipeline.coordinator import check_text
from pipeline.launcher import ConfigError, PipelineConfig, StageSupervisor, check_device, max_new_tokens_limit
from pipeline.models import ModelSpec

from .conftest import CLI, children_of

BAD = [  # (args, the flag named, words of the reason)
    (["--threads", "-1"], "--threads", "-1 is not in the range"),
    (["--t3-threads", "0"], "--t3-threads", "0 is not in the range"),
    (["--port", "99999"], "--port", "99999 is not in the range"),
    (["--max-inflight", "0"], "--max-inflight", "0 is not in the range"),
    (["--device", "tpu"], "--device", "'tpu' is not a device"),
    (["--cfm-device", "cuda:x"], "--cfm-device", "is not a device"),
    (["--max-new-tokens", "100000"], "--max-new-tokens", f"over this model's limit of {max_new_tokens_limit(ModelSpec())}"),
    (["--exaggeration", "1e308"], "--exaggeration", "exaggeration must be in [0, 100]"),
    (["--cfg-weight", "1e308"], "--cfg-weight", "cfg_weight must be in [0, 100]"),
    (["--top-p", "1.5"], "--top-p", "top_p must be in (0, 1]"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "--device", "CUDA is not available on this machine"))


@pytest.fixture
def no_stage(monkeypatch):
    """Fail the test if anything tries to start a stage process."""
    def trap(self):
        raise AssertionError("a stage was started for a bad flag")

    monkeypatch.setattr(StageSupervisor, "start", trap)


@pytest.mark.parametrize("args,flag,reason", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_a_bad_flag_exits_2_naming_it_before_any_stage(no_stage, args, flag, reason):
    r = CliRunner().invoke(cli.main, ["say", *args, "Hello."])
    assert r.exit_code == 2, r.output
    assert f"Error: Invalid value for '{flag}'" in r.output and reason in r.output


def test_serve_checks_its_flags_too(no_stage):
    r = CliRunner().invoke(cli.main, ["serve", "--max-inflight", "0"])
    assert r.exit_code == 2 and "Invalid value for '--max-inflight'" in r.output


def test_a_used_tcp_port_is_one_clear_line(no_stage):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli.main, ["serve", "--transport", "tcp", "--port", str(port)])
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '--port': tcp port {port} on 127.0.0.1 is not free" in r.output
    assert "Traceback" not in r.output


def test_the_real_command_fails_fast_and_leaves_nothing(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    t0 = time.monotonic()
    p = subprocess.Popen([*CLI, "say", "--max-inflight", "0", "Hello."], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate(timeout=30)
    # generous against a loaded machine; the flag is checked before torch is even needed (~0.3 s here)
    assert time.monotonic() - t0 < 10
    assert p.returncode == 2 and out == b""
    assert b"Error: Invalid value for '--max-inflight'" in err and b"Traceback" not in err
    assert children_of(p.pid) == [] and list(tmp_path.iterdir()) == []  # no stage, no run directory


def test_version():
    r = CliRunner().invoke(cli.main, ["--version"])
    assert r.exit_code == 0 and r.output.startswith(f"tts-pipeline {cli.package_version()} (wire protocol ")


@pytest.mark.parametrize("value", ["cpu", "cuda", "cuda:0"] if torch.cuda.is_available() else ["cpu"])
def test_good_devices_pass(value):
    assert check_device(value) == value


def test_the_api_checks_its_config_before_starting(no_stage):
    for config, option in ((PipelineConfig(threads=-1), "threads"), (PipelineConfig(max_inflight=0), "max_inflight"),
                           (PipelineConfig(base_port=70000, transport="tcp"), "port"),
                           (PipelineConfig(devices={"t3": "gpu"}), "t3_device")):
        with pytest.raises(ConfigError) as e:
            Pipeline(config).start()
        assert e.value.option == option


def test_a_lone_surrogate_is_bad_text_and_leaves_its_id_free():
    from ipc.endpoints import Endpoints
    from ipc.sockets import SocketFactory
    from pipeline.coordinator import Coordinator

    with pytest.raises(ValueError, match=r"not valid Unicode: '\\ud800' at position 3"):
        check_text("abc\ud800def")
    with SocketFactory(Endpoints("ipc")) as sockets:  # a coordinator with no stages: submit only queues
        coordinator = Coordinator(sockets, sockets.endpoint)
        with pytest.raises(ValueError, match="not valid Unicode"):
            coordinator.submit("abc\ud800def", rid="mine")
        assert coordinator.submit("Fine text.", rid="mine")[0] == "mine"  # the id was never taken
