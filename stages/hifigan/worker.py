"""The HiFiGAN stage process: mel chunks in (from CFM), audio chunks out (to the coordinator).

`HiFiGANWorker` is the logic (no sockets): one VocoderStream per request in a bounded map.
At the end of each request it checks samples == 960 x tokens before sending the end
sentinel; a mismatch fails the request loudly. `run` is the process entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ipc.schema import Audio, End, Mel, Message, Request
from stages.common.accounting import check_totals
from stages.common.chain import ChainWorker
from stages.common.params import parse_params
from stages.common.process import StageArgs, stage_main
from stages.common.spec import ModelSpec
from stages.hifigan.part import load_hifigan_part, new_vocoder_stream
from stages.hifigan.streaming import VocoderStream

STAGE = "hifigan"
MAX_INFLIGHT = 64  # per-request vocoder state is a few frames of context; T3's slots are the real limit


@dataclass
class _Request:
    stream: VocoderStream
    frames: int = 0  # mel frames received (to check `start` and CFM's end total)


class HiFiGANWorker(ChainWorker):
    name = STAGE

    def __init__(self, hift, default_schedule=None, max_inflight: int = MAX_INFLIGHT):
        super().__init__(max_inflight)
        self.hift, self.default_schedule = hift, default_schedule
        self.sample_rate = hift.cfg.sampling_rate

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="", params={"seed": 0}))
        out += self.handle(Mel(rid="warmup", seq=1, start=0, mel=np.full((80, 24), -5.0, np.float32)))
        out += self.handle(End(rid="warmup", seq=2, totals={"tokens": 12, "frames": 24}))
        assert isinstance(out[-1], End), out[-1]

    def start(self, req: Request):
        stream = new_vocoder_stream(self.hift, parse_params(req.params, self.default_schedule))
        return _Request(stream), []  # the coordinator knows the request from its own records

    def data(self, msg: Message, st: _Request) -> list[Message]:
        if not isinstance(msg, Mel):
            raise RuntimeError(f"hifigan expects mel, got {msg.KIND}")
        if msg.start != st.frames:
            raise RuntimeError(f"mel out of order: got start {msg.start}, expected {st.frames}")
        st.frames += msg.mel.shape[1]
        return self._audio(msg.rid, st.stream.push(torch.from_numpy(msg.mel.copy())))

    def end(self, msg: End, st: _Request) -> list[Message]:
        tokens = msg.totals.get("tokens", 0)
        if msg.totals.get("frames") != st.frames:
            raise RuntimeError(f"CFM sent {msg.totals.get('frames')} frames but {st.frames} arrived")
        out = self._audio(msg.rid, st.stream.finish())
        check_totals(tokens, st.frames, st.stream.samples_emitted)  # raises AccountingError: audio lost
        totals = {"tokens": tokens, "frames": st.frames, "samples": st.stream.samples_emitted}
        return out + [End(rid=msg.rid, seq=self.table.seq(msg.rid), totals=totals, reason=msg.reason)]

    def _audio(self, rid: str, chunks) -> list[Message]:
        return [Audio(rid=rid, seq=self.table.seq(rid), start=c.start, sample_rate=self.sample_rate, pcm=c.pcm.numpy())
                for c in chunks]


def make_worker(args: StageArgs) -> HiFiGANWorker:
    worker = HiFiGANWorker(load_hifigan_part(ModelSpec(**args.model, device=args.device)))
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
