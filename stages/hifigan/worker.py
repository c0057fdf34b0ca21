"""The HiFiGAN stage process: mel chunks in (from CFM), audio chunks out (to the coordinator).

`HiFiGANWorker` is the logic (no sockets): one VocoderStream per request in a bounded map.
`handle` only queues each request's mel chunks; `work` picks several requests' next chunks in
service order (first chunks first, stages/common/lanes.py), commits each one's f0 and source
(per request), decodes them (exact: one solo call each; padded: one batched call,
stages/hifigan/batch.py) and sends the samples. At the end of each request it checks samples == 960 x tokens before sending the end
sentinel; a mismatch fails the request loudly. `run` is the process entry.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass

import numpy as np
import torch

from ipc import cuda_ipc
from ipc.schema import Audio, End, Mel, Message, Request
from stages.common.accounting import check_totals
from stages.common.chain import ChainWorker, exact_batching, stage_capacity
from stages.common.lanes import BatchLimits, Shape
from stages.common.params import parse_params
from stages.common.process import StageArgs, stage_main
from stages.common.spec import ModelSpec
from stages.hifigan.batch import decode_jobs, edge_frames, job_shape
from stages.hifigan.part import load_hifigan_part, new_vocoder_stream
from stages.hifigan.streaming import DecodeJob, VocoderStream, Window

STAGE = "hifigan"
VOCODER_LIMITS = BatchLimits(
    max_jobs=16,  # requests per decode call
    max_units=512,  # padded mel frames per call (10 s of audio): ~0.3 s at `small` on one core, so a cancel waits < 1 s
    bucket_step=8,  # frames: the finest padding granularity
    age_limit=4,  # calls a later chunk may be passed over before it is urgent
)
FINAL = None  # the queued job of a request's end: decode up to the true end


@dataclass
class _Request:
    stream: VocoderStream
    frames: int = 0  # mel frames received (to check `start` and CFM's end total)


class HiFiGANWorker(ChainWorker):
    name = STAGE

    def __init__(self, hift, default_schedule=None, capacity: int = stage_capacity({}), limits: BatchLimits = VOCODER_LIMITS,
                 exact: bool | None = None, model: str | None = None):
        super().__init__(capacity, limits)
        self.hift, self.default_schedule, self.model = hift, default_schedule, model  # model: the family (request parameters)
        self.sample_rate = hift.cfg.sampling_rate
        self.edge = edge_frames(hift)
        self.exact = exact_batching({}, str(hift.stft_window.device)) if exact is None else exact  # one decode per job

    def warm_up(self) -> None:
        """Two requests of different lengths through the batched path, then nothing left."""
        out: list[Message] = []
        for rid, n in (("warmup-a", 24), ("warmup-b", 40)):
            out += self.handle(Request(rid=rid, seq=0, text="", params={"seed": 0}))
            out += self.handle(Mel(rid=rid, seq=1, start=0, mel=np.full((80, n), -5.0, np.float32)))
            out += self.handle(End(rid=rid, seq=2, totals={"tokens": n // 2, "frames": n}))
        while self.busy():
            out += self.work()
        assert sum(isinstance(m, End) for m in out) == 2 and len(self.table) == 0, out

    def handle(self, msg: Message) -> list[Message]:
        if isinstance(msg, Mel) and msg.cuda is not None:  # map and copy every handle, also of a request we drop
            try:
                msg = dataclasses.replace(msg, mel=cuda_ipc.receive(msg.cuda, self.hift.stft_window.device), cuda=None)
            except Exception as e:
                return [self.fail(msg.rid, e)] if msg.rid in self.table else []
        return super().handle(msg)

    def start(self, req: Request):
        stream = new_vocoder_stream(self.hift, parse_params(req.params, self.default_schedule, self.model))
        return _Request(stream), []  # the coordinator knows the request from its own records

    def data(self, msg: Message, st: _Request) -> list[torch.Tensor]:
        if not isinstance(msg, Mel):
            raise RuntimeError(f"hifigan expects mel, got {msg.KIND}")
        if msg.start != st.frames:
            raise RuntimeError(f"mel out of order: got start {msg.start}, expected {st.frames}")
        st.frames += msg.mel.shape[1]
        if isinstance(msg.mel, torch.Tensor):  # received through CUDA IPC (handle): already our own copy
            return [msg.mel]
        return [torch.from_numpy(msg.mel.copy())]  # [80, n]

    def end(self, msg: End, st: _Request) -> list[None]:
        if msg.totals.get("frames") != st.frames:
            raise RuntimeError(f"CFM sent {msg.totals.get('frames')} frames but {st.frames} arrived")
        return [FINAL]

    def finish(self, msg: End, st: _Request) -> list[Message]:
        tokens = msg.totals.get("tokens", 0)
        check_totals(tokens, st.frames, st.stream.samples_emitted)  # raises AccountingError: audio lost
        totals = {"tokens": tokens, "frames": st.frames, "samples": st.stream.samples_emitted}
        return [End(rid=msg.rid, seq=self.table.seq(msg.rid), totals=totals, reason=msg.reason)]

    # --- jobs ---------------------------------------------------------------------------
    @staticmethod
    def _window(st: _Request, mel: torch.Tensor | None) -> Window | None:
        return st.stream.window(0, True) if mel is FINAL else st.stream.window(mel.shape[1], False)

    @staticmethod
    def _plan(st: _Request, mel: torch.Tensor | None) -> DecodeJob | None:
        return st.stream.plan_finish() if mel is FINAL else st.stream.plan_push(mel)

    def settle(self, st: _Request, mel: torch.Tensor | None) -> bool:
        """A chunk that makes no sample final is taken at once (no model call: the mel and its noise are kept)."""
        if self._window(st, mel) is not None:
            return False
        assert self._plan(st, mel) is None
        return True

    def work(self) -> list[Message]:
        """One decode call for the next chunks of several requests (service order; the head always goes)."""
        self.tick += 1
        out: list[Message] = []
        chosen: list[str] = []
        shapes: list[Shape] = []
        for rid, slot in self.heads():
            try:
                shape = job_shape(self._window(slot.state, slot.lane.jobs[0]), self.edge)
            except Exception as e:
                out.append(self.fail(rid, e))
                continue
            if not self._fits([*shapes, shape]):
                continue  # a fresh call each time: a job left out now is at the head of the order next time
            chosen.append(rid)
            shapes.append(shape)
        self.served = chosen
        jobs: list[tuple[str, DecodeJob]] = []
        for rid in chosen:
            slot = self.table.get(rid)
            try:  # f0 and the source, per request
                job = self._plan(slot.state, slot.lane.jobs[0])
                if job is None:
                    raise RuntimeError("a queued chunk made no sample final")  # settle() takes those
                jobs.append((rid, job))
            except Exception as e:
                out.append(self.fail(rid, e))
        for (rid, job), wav in zip(jobs, self._decode([job for _, job in jobs])):
            st = self.table.get(rid).state
            try:
                if isinstance(wav, Exception):
                    raise wav
                chunk = st.stream.complete(job, wav)
                out.append(Audio(rid=rid, seq=self.table.seq(rid), start=chunk.start, sample_rate=self.sample_rate,
                                 pcm=chunk.pcm.numpy()))
                out += self.job_done(rid)
            except Exception as e:
                out.append(self.fail(rid, e))
        return out

    def _fits(self, shapes: list[Shape]) -> bool:
        if self.exact:  # one call per job: no padding, only the count and the frames are bounded
            return len(shapes) == 1 or (len(shapes) <= self.limits.max_jobs and sum(s.size for s in shapes) <= self.limits.max_units)
        return self.limits.fits(shapes) is not None

    def _decode(self, jobs: list[DecodeJob]) -> list[torch.Tensor | Exception]:
        """One batched call (exact: one call per job); if it fails, each job alone, so only the request at fault fails."""
        if not jobs:
            return []
        if self.exact:
            return [self._decode_one(job) for job in jobs]
        try:
            return decode_jobs(self.hift, jobs, self.limits.fits([job_shape(j, self.edge) for j in jobs]))
        except Exception as e:
            if len(jobs) == 1:
                return [e]
        return [self._decode_one(job) for job in jobs]

    def _decode_one(self, job: DecodeJob) -> torch.Tensor | Exception:
        try:
            return decode_jobs(self.hift, [job])[0]
        except Exception as e:
            return e


def make_worker(args: StageArgs) -> HiFiGANWorker:
    spec = ModelSpec(**args.model, device=args.device)
    worker = HiFiGANWorker(load_hifigan_part(spec), capacity=stage_capacity(args.options),
                           exact=exact_batching(args.options, args.device), model=spec.kind)
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
