"""The CFM stage process: speech tokens in (from T3), mel chunks out (to HiFiGAN).

`CFMWorker` is the logic (no sockets): one CFMStream per request in a bounded map, freed
when the request ends, fails or is cancelled. `run` is the process entry.
"""
from __future__ import annotations

import logging

import numpy as np

from ipc.schema import Cancel, End, Error, Mel, Message, Request, Tokens
from stages.common.process import StageArgs, stage_main
from stages.common.requests import RequestTable, forward

STAGE = "cfm"
log = logging.getLogger("tts.cfm")


class CFMWorker:
    name = STAGE

    def __init__(self, engine_part, default_schedule=None, max_inflight: int = 64):
        self.part, self.default_schedule = engine_part, default_schedule
        self.table: RequestTable = RequestTable(STAGE, max_inflight)
        self.received: dict[str, int] = {}  # ids received per request (to check `start` and the end total)

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="", params={"seed": 0}))
        out += self.handle(Tokens(rid="warmup", seq=1, start=0, ids=np.arange(12, dtype=np.int64)))
        out += self.handle(End(rid="warmup", seq=2, totals={"tokens": 12}))
        assert isinstance(out[-1], End), out[-1]

    def handle(self, msg: Message) -> list[Message]:
        rid = msg.rid
        if isinstance(msg, (Cancel, Error)):
            self.received.pop(rid, None)
            return [forward(msg, self.table)]
        try:
            if isinstance(msg, Request):
                return self._start(msg)
            stream = self.table.get(rid)
            if stream is None:
                log.warning("cfm: %s for unknown request %s dropped", type(msg).KIND, rid)
                return []
            if isinstance(msg, Tokens):
                if msg.start != self.received[rid]:
                    raise RuntimeError(f"tokens out of order: got start {msg.start}, expected {self.received[rid]}")
                self.received[rid] += len(msg.ids)
                return self._mels(rid, stream.push(msg.ids.tolist()))
            if isinstance(msg, End):
                if msg.totals.get("tokens") != self.received[rid]:
                    raise RuntimeError(f"T3 sent {msg.totals.get('tokens')} tokens but {self.received[rid]} arrived")
                out = self._mels(rid, stream.finish())
                out.append(End(rid=rid, seq=self.table.seq(rid), totals={"tokens": len(stream.tokens), "frames": stream.frames_emitted},
                               reason=msg.reason))
                self.table.pop(rid)
                self.received.pop(rid, None)
                return out
        except Exception as e:  # this request fails; the stage and other requests carry on
            log.warning("request %s failed: %s", rid, e)
            self.received.pop(rid, None)
            return [self.table.error(rid, e)]
        return []

    def _start(self, req: Request) -> list[Message]:
        from pipeline.models import derive_seed
        from pipeline.params import parse_params
        from stages.cfm.noise import NoiseSource
        from stages.cfm.streaming import CFMStream

        params = parse_params(req.params, self.default_schedule)
        stream = CFMStream(self.part.flow, self.part.conds, NoiseSource(derive_seed(params.seed, "cfm")), params.schedule)
        self.table.add(req.rid, stream)
        self.received[req.rid] = 0
        return [Request(rid=req.rid, seq=self.table.seq(req.rid), text="", params=req.params)]

    def _mels(self, rid: str, chunks) -> list[Message]:
        return [Mel(rid=rid, seq=self.table.seq(rid), start=c.start, mel=c.mel.numpy()) for c in chunks]

    def busy(self) -> bool:
        return False

    def work(self) -> list[Message]:
        return []

    def close(self) -> None:
        self.table.close()


def make_worker(args: StageArgs) -> CFMWorker:
    from pipeline.models import ModelSpec, load_cfm_part

    worker = CFMWorker(load_cfm_part(ModelSpec(**args.model, device=args.device)))
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
