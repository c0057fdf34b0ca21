"""The T3 stage process: requests in (from the coordinator), speech tokens out (to CFM), one token at a time.

`T3Worker` is the logic (no sockets): it starts a T3 session per request and interleaves
the decode steps of all active requests round-robin, one step each, so none starves.
`run` is the process entry (stages/common/process.py moves the messages).
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np

from ipc.schema import Cancel, End, Error, Message, Request, Tokens
from stages.common.process import StageArgs, stage_main
from stages.common.params import parse_params
from stages.common.requests import CapacityError, RequestTable, forward
from stages.common.spec import ModelSpec
from stages.t3.part import load_t3_part

STAGE = "t3"
MAX_QUEUED = 1024  # requests waiting for a KV-cache slot before new ones are refused
WARMUP_TOKENS = 4  # decode steps run at start-up so the first real request pays no first-call costs
log = logging.getLogger("tts.t3")


class T3Worker:
    name = STAGE

    def __init__(self, part, max_inflight: int = 4):
        from stages.t3.text import encode_text

        self.part, self._encode = part, encode_text
        self.table: RequestTable = RequestTable(STAGE, max_inflight)
        self.queue: deque[Request] = deque()  # waiting for a slot
        self.rr: deque[str] = deque()  # active requests in round-robin order
        self.counts: dict[str, int] = {}  # tokens handed out per active request

    def warm_up(self) -> None:
        out = self.handle(Request(rid="warmup", seq=0, text="Warm up.", params={"seed": 0, "ignore_eos": True, "max_new_tokens": WARMUP_TOKENS}))
        while self.busy():
            out += self.work()
        assert isinstance(out[-1], End), out[-1]

    # --- messages -------------------------------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        if isinstance(msg, Request):
            if len(self.queue) >= MAX_QUEUED:
                return [Error(rid=msg.rid, seq=0, stage=STAGE, message=f"t3: {MAX_QUEUED} requests queued; try again later")]
            self.queue.append(msg)
            return self._admit()
        if isinstance(msg, (Cancel, Error)):
            self.queue = deque(r for r in self.queue if r.rid != msg.rid)
            if msg.rid in self.rr:
                self.rr.remove(msg.rid)
            self.counts.pop(msg.rid, None)
            return [forward(msg, self.table)] + self._admit()
        log.warning("t3 ignores a %s message for %s", type(msg).KIND, msg.rid)
        return []

    def _admit(self) -> list[Message]:
        """Start queued requests while slots are free."""
        out: list[Message] = []
        while self.queue and len(self.table) < self.table.limit:
            out += self._start(self.queue.popleft())
        return out

    def _start(self, req: Request) -> list[Message]:
        try:
            params = parse_params(req.params)
            ids = self._encode(req.text, self.part.tokenizer, self.part.generator.cfg)
            session = self.part.generator.start(ids, self.part.conds, params.sampling)
        except (ValueError, CapacityError) as e:  # bad input: this request fails, nothing else
            return [Error(rid=req.rid, seq=0, stage=STAGE, message=str(e))]
        except Exception as e:
            log.exception("request %s failed to start", req.rid)
            return [Error(rid=req.rid, seq=0, stage=STAGE, message=f"{type(e).__name__}: {e}")]
        self.table.add(req.rid, session)
        self.rr.append(req.rid)
        self.counts[req.rid] = 0
        # The downstream stages need the parameters (seed, schedule); the text stays here.
        return [Request(rid=req.rid, seq=self.table.seq(req.rid), text="", params={**req.params, "seed": params.seed})]

    # --- decode work ----------------------------------------------------------------
    def busy(self) -> bool:
        return bool(self.rr)

    def work(self) -> list[Message]:
        """One decode step of the next active request."""
        rid = self.rr.popleft()
        session = self.table.get(rid)
        out: list[Message] = []
        try:
            tok = session.step()
            if tok is not None:
                n = self.counts[rid]
                out.append(Tokens(rid=rid, seq=self.table.seq(rid), start=n, ids=np.array([tok], dtype=np.int64)))
                self.counts[rid] = n + 1
            if session.finished:
                out.append(End(rid=rid, seq=self.table.seq(rid), totals={"tokens": self.counts.pop(rid)},
                               reason=session.finish_reason or ""))
                self.table.pop(rid)
                return out + self._admit()
        except Exception as e:  # e.g. non-finite logits: this request fails, the stage carries on
            log.warning("request %s failed: %s", rid, e)
            self.counts.pop(rid, None)
            return out + [self.table.error(rid, e)] + self._admit()
        self.rr.append(rid)
        return out

    def close(self) -> None:
        self.table.close()


def make_worker(args: StageArgs) -> T3Worker:
    spec = ModelSpec(**args.model, device=args.device)
    max_inflight = int(args.options.get("max_inflight", 4))
    worker = T3Worker(load_t3_part(spec, max_slots=max_inflight), max_inflight)
    worker.warm_up()
    return worker


def run(args: StageArgs) -> None:
    """Process entry (torch.multiprocessing spawn target)."""
    stage_main(args, make_worker)
