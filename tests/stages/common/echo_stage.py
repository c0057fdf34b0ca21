"""A stage with no model for the stage-process tests: echoes requests, forwards cancels and errors.

A request with text "boom" makes handle() raise (the loop's safety net must turn it into an error);
the process entry is importable so torch.multiprocessing's spawn can start it. Run as a module it
is a stand-in launcher: it starts the stage from a short-lived thread and then waits on stdin.
"""
from __future__ import annotations

import sys
import threading

from ipc.schema import Cancel, Error, Message, Request
from stages.common.process import StageArgs, stage_main


class EchoWorker:
    name = "echo"

    def handle(self, msg: Message) -> list[Message]:
        if isinstance(msg, Request):
            if msg.text == "boom":
                raise RuntimeError("boom")
            return [msg]
        if isinstance(msg, (Cancel, Error)):
            return [msg]
        return []

    def busy(self) -> bool:
        return False

    def work(self) -> list[Message]:
        return []

    def close(self) -> None:
        pass


def make_worker(args: StageArgs) -> EchoWorker:
    return EchoWorker()


def run(args: StageArgs) -> None:
    stage_main(args, make_worker)


def args_for(run_dir: str) -> StageArgs:
    """The echo stage's endpoints in a run directory (ipc socket files)."""
    ep = lambda name: f"ipc://{run_dir}/{name}.sock"  # noqa: E731
    return StageArgs(stage="echo", input_endpoint=ep("in"), output_endpoint=ep("out"), control_endpoint=ep("control"), model={})


def start_from_thread(args: StageArgs):
    """Start the stage from a thread that then ends (as a Pipeline started in a short-lived thread does)."""
    import torch.multiprocessing as mp

    box = {}

    def spawn():
        p = mp.get_context("spawn").Process(target=run, args=(args,), daemon=True)
        p.start()
        box["p"] = p

    t = threading.Thread(target=spawn)
    t.start()
    t.join()
    return box["p"]


if __name__ == "__main__":  # stand-in launcher: python -m tests.stages.common.echo_stage RUN_DIR
    proc = start_from_thread(args_for(sys.argv[1]))
    print(proc.pid, flush=True)
    sys.stdin.read()  # until the test kills us
