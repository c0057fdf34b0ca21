"""The HiFiGAN stage process: mel chunks in (from CFM), audio chunks out (to the coordinator).

`HiFiGANWorker` is the logic (no sockets): one VocoderStream per request in a bounded map.
At the end of each request it checks samples == 960 x tokens before sending the end
sentinel; a mismatch fails the request loudly. `run` is the process entry.
"""
from __future__ import annotations

import logging

import torch

from ipc.schema import Audio, Cancel, End, Error, Mel, Message, Request
from stages.common.process import StageArgs, stage_main
from stages.common.requests import RequestTable, forward

STAGE = "hifigan"
log = logging.getLogger("tts.hifigan")


class HiFiGANWorker:
    name = STAGE

    def __init__(self, hift, default_schedule=None, max_inflight: int = 64):
        self.hift, self.default_schedule = hift, default_schedule
        self.sample_rate = hift.cfg.sampling_rate
        self.table: RequestTable = RequestTable(STAGE, max_inflight)
        self.frames: dict[str, int] = {}  # mel frames received per request

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="", params={"seed": 0}))
        out += self.handle(Mel(rid="warmup", seq=1, start=0, mel=torch.zeros(80, 24).numpy() - 5))
        out += self.handle(End(rid="warmup", seq=2, totals={"tokens": 12, "frames": 24}))
        assert isinstance(out[-1], End), out[-1]

    def handle(self, msg: Message) -> list[Message]:
        rid = msg.rid
        if isinstance(msg, (Cancel, Error)):
            self.frames.pop(rid, None)
            return [forward(msg, self.table)]
        try:
            if isinstance(msg, Request):
                return self._start(msg)
            stream = self.table.get(rid)
            if stream is None:
                log.warning("hifigan: %s for unknown request %s dropped", type(msg).KIND, rid)
                return []
            if isinstance(msg, Mel):
                if msg.start != self.frames[rid]:
                    raise RuntimeError(f"mel out of order: got start {msg.start}, expected {self.frames[rid]}")
                self.frames[rid] += msg.mel.shape[1]
                return self._audio(rid, stream.push(torch.from_numpy(msg.mel.copy())))
            if isinstance(msg, End):
                from pipeline.sequential import check_totals

                frames, tokens = self.frames[rid], msg.totals.get("tokens", 0)
                if msg.totals.get("frames") != frames:
                    raise RuntimeError(f"CFM sent {msg.totals.get('frames')} frames but {frames} arrived")
                out = self._audio(rid, stream.finish())
                check_totals(tokens, frames, stream.samples_emitted)  # raises AccountingError: audio lost
                out.append(End(rid=rid, seq=self.table.seq(rid), reason=msg.reason,
                               totals={"tokens": tokens, "frames": frames, "samples": stream.samples_emitted}))
                self.table.pop(rid)
                self.frames.pop(rid, None)
                return out
        except Exception as e:  # this request fails; the stage and other requests carry on
            log.warning("request %s failed: %s", rid, e)
            self.frames.pop(rid, None)
            return [self.table.error(rid, e)]
        return []

    def _start(self, req: Request) -> list[Message]:
        from pipeline.models import derive_seed
        from pipeline.params import parse_params
        from stages.hifigan.streaming import VocoderStream

        params = parse_params(req.params, self.default_schedule)
        g = torch.Generator(device=self.hift.stft_window.device).manual_seed(derive_seed(params.seed, "hifigan"))
        self.table.add(req.rid, VocoderStream(self.hift, g, lookahead_frames=params.schedule.vocoder_lookahead_frames))
        self.frames[req.rid] = 0
        return []  # the coordinator learns of a request from its own records, not from us

    def _audio(self, rid: str, chunks) -> list[Message]:
        return [Audio(rid=rid, seq=self.table.seq(rid), start=c.start, sample_rate=self.sample_rate, pcm=c.pcm.numpy())
                for c in chunks]

    def busy(self) -> bool:
        return False

    def work(self) -> list[Message]:
        return []

    def close(self) -> None:
        self.table.close()


def make_worker(args: StageArgs) -> HiFiGANWorker:
    from pipeline.models import ModelSpec, load_hifigan_part

    worker = HiFiGANWorker(load_hifigan_part(ModelSpec(**args.model, device=args.device)))
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
