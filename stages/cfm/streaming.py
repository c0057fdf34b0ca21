"""Per-request CFM streaming: speech tokens in, final mel frames out.

Driven by the CFM stage process (batched across requests: `add`, `plan`, `complete`) and by
the single-process path (`push` takes token ids, `finish` ends the stream, both return
MelChunks). No sockets.

How frames are cut (docs/streaming.md has the full story):
- Only valid ids (< 6561) are kept, and they are counted *before* any position is
  assigned: an invalid id can neither reach the flow nor shift a frame (cause A).
- Chunk k covers tokens [b_k, b_k+1) with hops from the ChunkSchedule. It is emitted once
  b_k+1 + 3 + extra lookahead tokens exist, by one flow call over: the last `prompt_tokens`
  prompt tokens, `left_context_tokens` already-emitted tokens, the hop, and exactly the
  lookahead tokens (never more, so the call's inputs and hence its output depend only on
  the token count, not on how tokens were batched or timed).
- `finish` runs the final step (finalize=True) over everything not yet emitted, whether or
  not new tokens arrived since the last chunk, for any count including 0..3 (cause D).
  A model's tail tokens (Turbo: 3 silence tokens, 4299) are appended first, as its offline
  `generate` does, so they are decoded and counted like any token: n T3 tokens give n + 3
  tokens, 2(n + 3) frames and 960(n + 3) samples downstream.
- The solver's noise for every frame comes from the request's NoiseSource at the frame's
  absolute position, so every re-run sees the same noise at the same frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from stages.cfm.batch import run_flow_jobs
from stages.cfm.conds import FlowConditionals
from stages.cfm.flow import Flow
from stages.cfm.noise import NoiseSource
from stages.cfm.schedule import ALL, ChunkSchedule

SPEECH_VOCAB = 6561  # valid speech token ids are 0..6560; 6561/6562 are start/stop, above is padding


@dataclass
class MelChunk:
    start: int  # index of the first frame within the request's generated mel
    mel: torch.Tensor  # [80, n] float32 on CPU


@dataclass
class FlowJob:
    """The inputs of one chunk's flow call (planned from the token count alone) and which of its frames are kept."""

    tokens: torch.Tensor  # [1, T] long: the prompt window, then the request's token window
    finalize: bool  # the final step: the last tokens have no lookahead to wait for
    frames: int  # F: mel frames of the call (2T, or 2T - 6 when not finalize)
    noise: torch.Tensor  # [1, 80, F] float32 CPU: the request's noise at the frames' absolute positions
    prompt_cond: torch.Tensor  # [1, 80, 2K] the prompt window's mel (the estimator's cond; zeros after it)
    spks: torch.Tensor  # [1, 80] the projected speaker vector
    n_timesteps: int  # Euler steps
    start: int  # index of the first emitted frame within the request's generated mel
    lo: int  # emitted frames are [lo, hi) of the call's F frames
    hi: int


class CFMStream:
    """The CFM state of one request.

    `push`/`finish` run the flow at once (the single-process path). A stage that batches
    requests splits each step in two: `add` + `plan`/`plan_final` give the next jobs (cheap:
    token windows and noise, no model call), the batch runs them (stages/cfm/batch.py), and
    `complete` crops each job's frames, in plan order. Both ways run the same code.
    """

    def __init__(self, flow: Flow, conds: FlowConditionals, noise: NoiseSource, schedule: ChunkSchedule,
                 tail_tokens: Sequence[int] = ()):
        self.flow, self.noise, self.schedule = flow, noise, schedule
        self.tail_tokens = [int(t) for t in tail_tokens]  # decoded after the last token (Turbo's 3 silence tokens)
        self.ratio = flow.cfg.token_mel_ratio  # mel frames per token (2)
        p = conds.n_prompt_tokens
        k = p if schedule.prompt_tokens == ALL else min(p, int(schedule.prompt_tokens))
        self._prompt_tokens = conds.prompt_token[:, p - k :].long().cpu()  # [1, K]
        prompt_frames = conds.prompt_feat[:, self.ratio * (p - k) :]  # [1, 2K, 80]
        self._prompt_cond = flow.prompt_cond(prompt_frames, prompt_frames.size(1))  # [1, 80, 2K]
        # Absolute noise positions: prompt frame i is at i, generated frame j at 2P + j.
        self._prompt_noise = noise.frames(self.ratio * (p - k), self.ratio * p)  # [80, 2K]
        self._gen_offset = self.ratio * p
        self._spks = flow.embed_speaker(conds.embedding)  # [1, 80]
        self._hops = schedule.hops()
        self._next_hop = next(self._hops)
        self.tokens: list[int] = []  # valid ids received so far
        self.dropped = 0  # invalid ids received (not part of the audio)
        self.planned_tokens = 0  # b_k: tokens whose frames are planned (emitted once their job completes)
        self.frames_out = 0  # frames emitted (jobs completed)
        self.finished = False  # no more tokens: the final step is planned

    @property
    def frames_emitted(self) -> int:
        return self.frames_out

    # --- the solo path -------------------------------------------------------------------
    def push(self, ids: Iterable[int]) -> list[MelChunk]:
        """Add token ids; return the chunks that became ready (possibly none)."""
        self.add(ids)
        return self._run(list(iter(self.plan, None)))

    def finish(self) -> list[MelChunk]:
        """End of stream: emit every remaining frame (final step, finalize=True)."""
        job = self.plan_final()
        return self._run([job] if job is not None else [])

    def _run(self, jobs: list[FlowJob]) -> list[MelChunk]:
        return [self.complete(job, run_flow_jobs(self.flow, [job])[0]) for job in jobs]

    # --- plan / complete -----------------------------------------------------------------
    def add(self, ids: Iterable[int]) -> None:
        """Take token ids (invalid ones are counted and dropped before they get a position)."""
        if self.finished:
            raise RuntimeError("push after finish")
        for i in ids:
            i = int(i)
            if 0 <= i < SPEECH_VOCAB:
                self.tokens.append(i)
            else:
                self.dropped += 1

    def plan(self) -> FlowJob | None:
        """The next chunk whose lookahead has arrived, or None: tokens [b_k, b_k + hop) over exactly the lookahead."""
        if self.finished or len(self.tokens) < self.planned_tokens + self._next_hop + self.schedule.lookahead_tokens:
            return None
        end = self.planned_tokens + self._next_hop
        job = self._job(end, end + self.schedule.lookahead_tokens, finalize=False)
        self.planned_tokens = end
        self._next_hop = next(self._hops)
        return job

    def plan_final(self) -> FlowJob | None:
        """End of stream: the final step over every token not yet planned (None if there is none); no more input after it."""
        if self.finished:
            return None
        self.tokens.extend(self.tail_tokens)  # part of the audio: counted in `tokens`, frames and samples
        n = len(self.tokens)
        job = self._job(n, n, finalize=True) if n > self.planned_tokens else None
        self.planned_tokens = n
        self.finished = True
        return job

    def complete(self, job: FlowJob, mel: torch.Tensor, on_device: bool = False) -> MelChunk:
        """The job's output mel [1, 80, F] -> the chunk of final frames. Jobs complete in plan order.
        on_device: keep the chunk on the flow's device (a CUDA IPC hand-off, ipc/cuda_ipc.py), else on the CPU."""
        if job.start != self.frames_out:
            raise RuntimeError(f"chunk at frame {job.start} completed out of order (expected {self.frames_out})")
        if mel.size(-1) < job.hi:
            raise RuntimeError(f"flow returned {mel.size(-1)} frames, need {job.hi}")
        frames = mel[0, :, job.lo : job.hi].float()
        chunk = MelChunk(start=job.start, mel=(frames if on_device else frames.cpu()).contiguous())
        self.frames_out += job.hi - job.lo
        return chunk

    def _steps(self, first_token: int) -> int:
        """Solver steps of the call emitting from first_token: first_chunk_timesteps for the first chunk, if set."""
        first = self.schedule.first_chunk_timesteps
        return first if first is not None and first_token == 0 else self.schedule.n_timesteps

    def _job(self, emit_end: int, input_end: int, finalize: bool) -> FlowJob:
        """The flow call emitting the frames of tokens [planned_tokens, emit_end) from tokens up to input_end."""
        b = self.planned_tokens
        ctx = self.schedule.left_context_tokens
        c = 0 if ctx == ALL else max(0, b - int(ctx))  # first generated token re-run
        r = self.ratio
        window = torch.tensor([self.tokens[c:input_end]], dtype=torch.long)  # [1, input_end - c]
        tokens = torch.cat([self._prompt_tokens, window], dim=1)  # [1, K + input_end - c]
        n_frames = self.flow.cfg.mel_frames(tokens.size(1), finalize)  # F
        k_frames = self._prompt_cond.size(-1)
        gen_frames = n_frames - k_frames  # generated frames in this call, from token c
        g0 = self._gen_offset + r * c
        noise = torch.cat([self._prompt_noise, self.noise.frames(g0, g0 + gen_frames)], dim=1).unsqueeze(0)  # [1, 80, F]
        return FlowJob(tokens=tokens, finalize=finalize, frames=n_frames, noise=noise, prompt_cond=self._prompt_cond,
                       spks=self._spks, n_timesteps=self._steps(b), start=r * b,
                       lo=k_frames + r * (b - c), hi=k_frames + r * (emit_end - c))
