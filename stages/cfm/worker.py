"""The CFM stage process: speech tokens in (from T3), mel chunks out (to HiFiGAN).

`CFMWorker` is the logic (no sockets): one CFMStream per request in a bounded map, freed
when the request ends, fails or is cancelled. `handle` only queues each request's chunk jobs
(stages/cfm/streaming.py `plan`); `work` runs one solver step of the running batch
(stages/cfm/batch.py: each row's own call when exact, one padded call otherwise), after
letting waiting jobs join it in service order (first chunks first, stages/common/lanes.py),
and sends the chunks whose trajectories reached t = 1.
`run` is the process entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipc import cuda_ipc
from ipc.schema import End, Mel, Message, Request, Tokens
from stages.cfm.batch import FlowBatch
from stages.cfm.graphs import attach_flow_graphs, flow_graphs_wanted
from stages.cfm.part import load_cfm_part, new_cfm_stream
from stages.cfm.streaming import CFMStream, FlowJob
from stages.cfm.voices import store_voices
from stages.common.chain import ChainWorker, exact_batching, stage_capacity
from stages.common.lanes import BatchLimits
from stages.common.params import parse_params
from stages.common.process import StageArgs, stage_main
from stages.common.spec import ModelSpec

STAGE = "cfm"
FLOW_LIMITS = BatchLimits(
    max_jobs=16,  # requests per estimator step (32 rows with the CFG pair); the CPU gain flattens well before (docs/cfm.md)
    max_units=2048,  # padded frames per step: 8 steady chunks at `small` take ~0.6 s a step on one core, so a cancel waits < 1 s
    bucket_step=16,  # frames (8 tokens): the finest padding granularity
    age_limit=20,  # steps (two 10-step trajectories) a later chunk may be passed over before it is urgent
)


@dataclass
class _Request:
    stream: CFMStream
    received: int = 0  # ids received (to check `start` and T3's end total)


class CFMWorker(ChainWorker):
    name = STAGE

    def __init__(self, part, default_schedule=None, capacity: int = stage_capacity({}), limits: BatchLimits = FLOW_LIMITS,
                 exact: bool | None = None, voices=None):
        super().__init__(capacity, limits)
        self.part, self.default_schedule = part, default_schedule
        dev = part.flow.encoder_proj.weight.device
        # without a store: the checkpoint's voice only
        self.voices = voices if voices is not None else store_voices(part.conds, part.flow.cfg, dev, family=part.model)
        if exact is None:
            exact = exact_batching({}, str(part.flow.encoder_proj.weight.device))
        self.batch = FlowBatch(part.flow, limits, exact)  # the running batch: one row per request at most
        self.cuda_ipc = False  # mel chunks to HiFiGAN as CUDA IPC handles (make_worker: option cuda_ipc, one GPU)

    def warm_up(self) -> None:
        """Two requests of different lengths through the batched path (padding, masks, joins), then nothing left."""
        out: list[Message] = []
        for rid, n in (("warmup-a", 12), ("warmup-b", 7)):
            out += self.handle(Request(rid=rid, seq=0, text="", params={"seed": 0, "n_timesteps": 2}))
            out += self.handle(Tokens(rid=rid, seq=1, start=0, ids=np.arange(n, dtype=np.int64)))
            out += self.handle(End(rid=rid, seq=2, totals={"tokens": n}))
        while self.busy():
            out += self.work()
        assert sum(isinstance(m, End) for m in out) == 2 and len(self.table) == 0 and not self.batch, out

    def start(self, req: Request):
        params = parse_params(req.params, self.default_schedule, self.part.model)
        _, conds = self.voices.resolve(params.voice)  # T3 checked the name; a voice removed since fails here, named
        stream = new_cfm_stream(self.part, params, conds)
        return _Request(stream), [Request(rid=req.rid, seq=0, text="", params=req.params)]

    def data(self, msg: Message, st: _Request) -> list[FlowJob]:
        if not isinstance(msg, Tokens):
            raise RuntimeError(f"cfm expects tokens, got {msg.KIND}")
        if msg.start != st.received:
            raise RuntimeError(f"tokens out of order: got start {msg.start}, expected {st.received}")
        st.received += len(msg.ids)
        st.stream.add(msg.ids.tolist())
        return list(iter(st.stream.plan, None))

    def end(self, msg: End, st: _Request) -> list[FlowJob]:
        if msg.totals.get("tokens") != st.received:
            raise RuntimeError(f"T3 sent {msg.totals.get('tokens')} tokens but {st.received} arrived")
        job = st.stream.plan_final()
        return [job] if job is not None else []

    def finish(self, msg: End, st: _Request) -> list[Message]:
        totals = {"tokens": len(st.stream.tokens), "frames": st.stream.frames_emitted}
        return [End(rid=msg.rid, seq=self.table.seq(msg.rid), totals=totals, reason=msg.reason)]

    def _mel(self, rid: str, chunk) -> Mel:
        seq = self.table.seq(rid)
        if self.cuda_ipc:  # the frames stay on the GPU: the message carries their CUDA IPC handle
            return Mel(rid=rid, seq=seq, start=chunk.start, mel=np.zeros((80, 0), np.float32), cuda=cuda_ipc.share(chunk.mel))
        return Mel(rid=rid, seq=seq, start=chunk.start, mel=chunk.mel.numpy())

    def forget(self, rid: str) -> None:
        self.batch.drop(rid)

    def work(self) -> list[Message]:
        """Let waiting jobs join (service order, until one does not fit), take one Euler step, send what finished."""
        self.tick += 1
        out: list[Message] = []
        for rid, slot in self.heads():
            if rid in self.batch:
                continue
            job = slot.lane.jobs[0]
            if not self.batch.can_admit(job.frames):
                break  # strict order: nothing overtakes a job that waits for room (no starvation)
            try:
                self.batch.add(rid, job)
            except Exception as e:
                out.append(self.fail(rid, e))
        self.served = [r.key for r in self.batch.rows]
        try:
            done = self.batch.step()
        except Exception as e:  # one estimator call serves every row: each of them fails, the stage carries on
            for rid in {r.key for r in self.batch.rows}:
                out.append(self.fail(rid, e))
            return out
        for rid, job, mel in done:
            st = self.table.get(rid).state
            try:
                chunk = st.stream.complete(job, mel, on_device=self.cuda_ipc)
                out.append(self._mel(rid, chunk))
                out += self.job_done(rid)
            except Exception as e:
                out.append(self.fail(rid, e))
        return out


def make_worker(args: StageArgs) -> CFMWorker:
    part = load_cfm_part(ModelSpec(**args.model, device=args.device))
    voices = store_voices(part.conds, part.flow.cfg, part.flow.encoder_proj.weight.device, args.options.get("voices_dir"),
                          args.options.get("voice_cache_size"), part.model)
    worker = CFMWorker(part, capacity=stage_capacity(args.options), exact=exact_batching(args.options, args.device),
                       voices=voices)
    # captured solver steps: on CUDA (unless --no-cuda-graphs) with padded batching, every shape at start-up
    graphs = args.options.get("cuda_graphs") if str(args.device).startswith("cuda") else None
    if flow_graphs_wanted(args.device, graphs) and not worker.batch.exact:
        attach_flow_graphs(worker.batch)
    worker.cuda_ipc = bool(args.options.get("cuda_ipc")) and str(args.device).startswith("cuda")
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
