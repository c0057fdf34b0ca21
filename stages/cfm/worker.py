"""The CFM stage process: speech tokens in (from T3), mel chunks out (to HiFiGAN).

`CFMWorker` is the logic (no sockets): one CFMStream per request in a bounded map, freed
when the request ends, fails or is cancelled. `run` is the process entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipc.schema import End, Mel, Message, Request, Tokens
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.streaming import CFMStream
from stages.common.chain import ChainWorker
from stages.common.params import parse_params
from stages.common.process import StageArgs, stage_main
from stages.common.spec import ModelSpec

STAGE = "cfm"
MAX_INFLIGHT = 64  # per-request streams are small (token lists); T3's slots are the real limit


@dataclass
class _Request:
    stream: CFMStream
    received: int = 0  # ids received (to check `start` and T3's end total)


class CFMWorker(ChainWorker):
    name = STAGE

    def __init__(self, part, default_schedule=None, max_inflight: int = MAX_INFLIGHT):
        super().__init__(max_inflight)
        self.part, self.default_schedule = part, default_schedule

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="", params={"seed": 0}))
        out += self.handle(Tokens(rid="warmup", seq=1, start=0, ids=np.arange(12, dtype=np.int64)))
        out += self.handle(End(rid="warmup", seq=2, totals={"tokens": 12}))
        assert isinstance(out[-1], End), out[-1]

    def start(self, req: Request):
        stream = new_cfm_stream(self.part, parse_params(req.params, self.default_schedule))
        return _Request(stream), [Request(rid=req.rid, seq=0, text="", params=req.params)]

    def data(self, msg: Message, st: _Request) -> list[Message]:
        if not isinstance(msg, Tokens):
            raise RuntimeError(f"cfm expects tokens, got {msg.KIND}")
        if msg.start != st.received:
            raise RuntimeError(f"tokens out of order: got start {msg.start}, expected {st.received}")
        st.received += len(msg.ids)
        return self._mels(msg.rid, st.stream.push(msg.ids.tolist()))

    def end(self, msg: End, st: _Request) -> list[Message]:
        if msg.totals.get("tokens") != st.received:
            raise RuntimeError(f"T3 sent {msg.totals.get('tokens')} tokens but {st.received} arrived")
        out = self._mels(msg.rid, st.stream.finish())
        totals = {"tokens": len(st.stream.tokens), "frames": st.stream.frames_emitted}
        return out + [End(rid=msg.rid, seq=self.table.seq(msg.rid), totals=totals, reason=msg.reason)]

    def _mels(self, rid: str, chunks) -> list[Message]:
        return [Mel(rid=rid, seq=self.table.seq(rid), start=c.start, mel=c.mel.numpy()) for c in chunks]


def make_worker(args: StageArgs) -> CFMWorker:
    worker = CFMWorker(load_cfm_part(ModelSpec(**args.model, device=args.device)))
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
