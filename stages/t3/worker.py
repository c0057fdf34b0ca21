"""The T3 stage process: requests in (from the coordinator), speech tokens out (to CFM), one tick at a time.

`T3Worker` is the logic (no sockets), written to the loop contract of stages/common/process.py:
`handle` validates a request (text, parameters, voice) and queues it, or frees a request on a
cancel or error, at once and without model compute; `work` admits waiting requests into free
slots (one batched prefill, budgeted) and runs one tick of the `T3Batch`, which samples one
token for every active request with one forward. `run` is the process entry.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ipc.schema import Cancel, End, Error, Message, Request, Tokens
from stages.common.chain import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE  # the launcher's defaults: one admission limit
from stages.common.params import parse_params
from stages.common.process import StageArgs, error_text, stage_main
from stages.common.requests import RequestTable, forward
from stages.common.spec import ModelSpec
from stages.t3.batch import Admission, Event
from stages.t3.part import T3Part, load_t3_part
from stages.t3.prefix_cache import DEFAULT_PREFIX_CACHE_SIZE
from stages.t3.voices import VoiceResolver, store_voices, voice_sampling

STAGE = "t3"
# Prefill work admitted per unit of work, in rows x positions (at least one request): ~0.25 s at
# `small` on one core, so a burst of arrivals delays the active streams' next token by about that.
ADMIT_ROWS_BUDGET = 256
IGNORED_LOG_INTERVAL_S = 1.0  # messages of kinds T3 does not take: one log line a second at most
WARMUP_TOKENS = 4  # decode steps run at start-up so the first real request pays no first-call costs
log = logging.getLogger("tts.t3")


@dataclass
class _Request:
    adm: Admission
    params: dict  # the flat parameters, forwarded downstream at admission (seed resolved)
    sent: int = 0  # speech tokens handed out so far
    active: bool = False  # holds a slot (else waiting)


class T3Worker:
    name = STAGE

    def __init__(self, part: T3Part, max_inflight: int = DEFAULT_MAX_INFLIGHT, max_queue: int = DEFAULT_MAX_QUEUE,
                 voices: VoiceResolver | None = None):
        if part.batch.max_slots < max_inflight:
            raise ValueError(f"the T3 batch has {part.batch.max_slots} slots for max_inflight {max_inflight}")
        self.part, self.batch = part, part.batch
        self.voices = voices if voices is not None else part.default_voices()
        self.max_inflight = max_inflight
        # The coordinator admits at most max_inflight + max_queue requests, and counts one until its
        # audio ends, so T3 never holds more; the bound past that only stops a sender that bypasses it.
        self.max_waiting = max_inflight + max_queue
        self.table: RequestTable[_Request] = RequestTable(STAGE, max_inflight + self.max_waiting)
        self.waiting: deque[str] = deque()
        self._ignored, self._ignored_logged = 0, -float("inf")

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="Warm up.", params={"seed": 0, "ignore_eos": True, "max_new_tokens": WARMUP_TOKENS}))
        while self.busy():
            out += self.work()
        assert isinstance(out[-1], End), out[-1]

    # --- messages (cheap: validation and queueing) -------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        if isinstance(msg, Request):
            return self._request(msg)
        if isinstance(msg, (Cancel, Error)):
            self._free(msg.rid)
            return [forward(msg, self.table)]  # also for ids we do not know: later stages free theirs
        self._ignored += 1  # data kinds are not T3's input: drop them, at most one log line a second
        now = time.monotonic()
        if now - self._ignored_logged >= IGNORED_LOG_INTERVAL_S:
            log.warning("t3 ignores a %s message for %s (%d ignored since the last note)", msg.KIND, msg.rid[:64], self._ignored)
            self._ignored, self._ignored_logged = 0, now
        return []

    def _request(self, req: Request) -> list[Message]:
        rid = req.rid
        if rid in self.table:  # the id is ambiguous from now on: fail it (both), here and downstream
            self._free(rid)
            return [self.table.error(rid, f"request id {rid!r} is already in flight (duplicate request)")]
        if len(self.waiting) >= self.max_waiting:
            return [Error(rid=rid, stage=STAGE, message=f"t3: {self.max_waiting} requests already waiting; "
                          "the coordinator's admission limit (max_inflight + max_queue) was bypassed")]
        try:
            params = parse_params(req.params, model=self.part.model)
            key, conds = self.voices.resolve(params.voice)  # an unknown or damaged voice fails here, named
            sampling = voice_sampling(params.sampling, conds, params.voice, req.params)
            ids, max_new = self.batch.check(self.part.encode(req.text), conds, sampling)
        except ValueError as e:  # bad input: this request fails, nothing else
            return [Error(rid=rid, stage=STAGE, message=error_text(e))]
        adm = Admission(rid, ids, conds, key, sampling, max_new)
        # the later stages need the parameters (seed, schedule, voice); the text stays here
        self.table.add(rid, _Request(adm, {**req.params, "seed": params.seed}))
        self.waiting.append(rid)
        return []

    def _free(self, rid: str) -> None:
        """Drop a request now: out of the waiting queue, or out of its slot (freed before the next tick)."""
        st = self.table.get(rid)
        if st is None:
            return
        if st.active:
            self.batch.cancel(rid)
        else:
            self.waiting.remove(rid)

    # --- model work: admission, then one tick ---------------------------------------------
    def busy(self) -> bool:
        return bool(self.waiting) or self.batch.active > 0

    def work(self) -> list[Message]:
        out = self._admit()
        if self.batch.active:
            out += self._events(self.batch.tick())
        return out

    def _admit(self) -> list[Message]:
        self.batch.compact()
        batch: list[Admission] = []
        budget = ADMIT_ROWS_BUDGET
        while self.waiting and len(batch) < self.batch.free_slots:
            adm = self.table.get(self.waiting[0]).adm
            cost = self.batch.prefill_rows(adm)
            if batch and cost > budget:
                break
            budget -= cost
            batch.append(adm)
            self.waiting.popleft()
        if not batch:
            return []
        out: list[Message] = []
        for adm in batch:
            st = self.table.get(adm.rid)
            st.active = True
            out.append(Request(rid=adm.rid, seq=self.table.seq(adm.rid), text="", params=st.params))
        return out + self._events(self.batch.admit(batch))

    def _events(self, events: list[Event]) -> list[Message]:
        """Admission or tick events -> messages (tokens numbered per request, end, error)."""
        out: list[Message] = []
        for ev in events:
            st = self.table.get(ev.rid)
            if st is None:  # cancelled meanwhile (cannot happen inside one unit of work; be safe)
                continue
            if ev.error:
                log.warning("request %s failed: %s", ev.rid, ev.error)
                out.append(self.table.error(ev.rid, ev.error))
                continue
            if ev.token is not None:
                out.append(Tokens(rid=ev.rid, seq=self.table.seq(ev.rid), start=st.sent, ids=np.array([ev.token], dtype=np.int64)))
                st.sent += 1
            if ev.finish:
                out.append(End(rid=ev.rid, seq=self.table.seq(ev.rid), totals={"tokens": st.sent}, reason=ev.finish))
                self.table.pop(ev.rid)
        return out

    def close(self) -> None:
        self.waiting.clear()
        for rid in list(self.table):
            self.batch.cancel(rid)
        self.batch.compact()
        self.table.close()


def make_worker(args: StageArgs) -> T3Worker:
    spec = ModelSpec(**args.model, device=args.device)
    max_inflight = int(args.options.get("max_inflight", DEFAULT_MAX_INFLIGHT))
    max_queue = int(args.options.get("max_queue", DEFAULT_MAX_QUEUE))
    cache = int(args.options.get("prefix_cache_size", DEFAULT_PREFIX_CACHE_SIZE))
    # None: captured ticks on CUDA, eager on a CPU; a CUDA-only option means nothing to a stage on a CPU
    graphs = args.options.get("cuda_graphs") if str(args.device).startswith("cuda") else None
    part = load_t3_part(spec, max_slots=max_inflight, prefix_cache_size=cache, cuda_graphs=graphs)
    # stored voices (the launcher passes the voices dir); without one only the checkpoint's voice
    voices = store_voices(part.conds, part.cfg, args.options.get("voices_dir"), args.options.get("voice_cache_size"))
    worker = T3Worker(part, max_inflight, max_queue, voices)
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
