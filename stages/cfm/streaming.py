"""Per-request CFM streaming: speech tokens in, final mel frames out.

Driven by the CFM stage process and by the single-process path.
No sockets: `push` takes token ids, `finish` ends the stream, both return MelChunks.

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
- The solver's noise for every frame comes from the request's NoiseSource at the frame's
  absolute position, so every re-run sees the same noise at the same frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from stages.cfm.conds import FlowConditionals
from stages.cfm.flow import Flow
from stages.cfm.noise import NoiseSource
from stages.cfm.schedule import ALL, ChunkSchedule

SPEECH_VOCAB = 6561  # valid speech token ids are 0..6560; 6561/6562 are start/stop, above is padding


@dataclass
class MelChunk:
    start: int  # index of the first frame within the request's generated mel
    mel: torch.Tensor  # [80, n] float32 on CPU


class CFMStream:
    """The CFM state of one request."""

    def __init__(self, flow: Flow, conds: FlowConditionals, noise: NoiseSource, schedule: ChunkSchedule):
        self.flow, self.noise, self.schedule = flow, noise, schedule
        self.ratio = flow.cfg.token_mel_ratio  # mel frames per token (2)
        p = conds.n_prompt_tokens
        k = p if schedule.prompt_tokens == ALL else min(p, int(schedule.prompt_tokens))
        self._prompt_tokens = conds.prompt_token[:, p - k :].long()  # [1, K]
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
        self.emitted_tokens = 0  # b_k: tokens whose frames have been emitted
        self.finished = False

    @property
    def frames_emitted(self) -> int:
        return self.ratio * self.emitted_tokens if not self.finished else self.ratio * len(self.tokens)

    def push(self, ids: Iterable[int]) -> list[MelChunk]:
        """Add token ids; return the chunks that became ready (possibly none)."""
        if self.finished:
            raise RuntimeError("push after finish")
        for i in ids:
            i = int(i)
            if 0 <= i < SPEECH_VOCAB:
                self.tokens.append(i)
            else:
                self.dropped += 1
        chunks = []
        while len(self.tokens) >= self.emitted_tokens + self._next_hop + self.schedule.lookahead_tokens:
            end = self.emitted_tokens + self._next_hop
            chunks.append(self._run(end, end + self.schedule.lookahead_tokens, finalize=False))
            self.emitted_tokens = end
            self._next_hop = next(self._hops)
        return chunks

    def finish(self) -> list[MelChunk]:
        """End of stream: emit every remaining frame (final step, finalize=True)."""
        if self.finished:
            return []
        n = len(self.tokens)
        chunks = [self._run(n, n, finalize=True)] if n > self.emitted_tokens else []
        self.finished = True
        return chunks

    def _run(self, emit_end: int, input_end: int, finalize: bool) -> MelChunk:
        """One flow call emitting the frames of tokens [emitted_tokens, emit_end)."""
        b = self.emitted_tokens
        ctx = self.schedule.left_context_tokens
        c = 0 if ctx == ALL else max(0, b - int(ctx))  # first generated token re-run
        r = self.ratio
        window = torch.tensor([self.tokens[c:input_end]], dtype=torch.long)  # [1, input_end - c]
        tokens = torch.cat([self._prompt_tokens, window], dim=1)  # [1, K + input_end - c]
        mu = self.flow.encode(tokens, finalize=finalize)  # [1, 80, F]
        n_frames = mu.size(-1)
        k_frames = self._prompt_cond.size(-1)
        gen_frames = n_frames - k_frames  # generated frames in this call, from token c
        cond = torch.zeros_like(mu)
        cond[:, :, :k_frames] = self._prompt_cond
        g0 = self._gen_offset + r * c
        noise = torch.cat([self._prompt_noise, self.noise.frames(g0, g0 + gen_frames)], dim=1).unsqueeze(0)  # [1, 80, F]
        mel = self.flow.solve(mu, self._spks, cond, noise, n_timesteps=self.schedule.n_timesteps)  # [1, 80, F]
        lo = k_frames + r * (b - c)
        hi = k_frames + r * (emit_end - c)
        assert mel.size(-1) >= hi, f"flow returned {mel.size(-1)} frames, need {hi}"
        return MelChunk(start=r * b, mel=mel[0, :, lo:hi].float().cpu().contiguous())
