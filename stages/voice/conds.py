"""One voice's conditionals: what the reference's Conditionals (conds.pt) holds, and each stage's part of it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from stages.cfm.conds import FlowConditionals
from stages.t3.conds import T3Conditionals

TOKEN_MEL_RATIO = 2  # 25 Hz tokens, 50 Hz mel frames

# Stored tensors, under the names conds.pt uses ("t3" and "gen" parts).
T3_FIELDS = ("speaker_emb", "cond_prompt_speech_tokens", "emotion_adv")
GEN_FIELDS = ("prompt_token", "prompt_token_len", "prompt_feat", "embedding")


@dataclass(frozen=True)
class VoiceConditionals:
    """One voice, as the reference's Conditionals holds it (t3.* and gen.* of conds.pt, same names and shapes).

    `.t3()` and `.flow()` give what the T3 and CFM stages take; `.tensors()` is the flat map
    the voice store writes.
    """

    speaker_emb: torch.Tensor  # t3 [1, 256] float32, L2-normalised VoiceEncoder embedding
    cond_prompt_speech_tokens: torch.Tensor  # t3 [1, <= 150] int64 (6 s at 25 Hz; fewer for a shorter clip)
    emotion_adv: torch.Tensor  # t3 [1, 1, 1] float32: the exaggeration the voice was made with
    prompt_token: torch.Tensor  # gen [1, T] int64 flow prompt tokens (10 s at most)
    prompt_token_len: torch.Tensor  # gen [1] int64 = T
    prompt_feat: torch.Tensor  # gen [1, F, 80] float32 natural-log mel of the same 10 s (F may be 2T + 1)
    embedding: torch.Tensor  # gen [1, 192] float32 raw CAMPPlus x-vector (the flow normalises it)

    @property
    def exaggeration(self) -> float:
        return float(self.emotion_adv.reshape(-1)[0])

    def t3(self) -> T3Conditionals:
        """T3's part: speaker embedding, prompt tokens, emotion."""
        return T3Conditionals(self.speaker_emb, self.cond_prompt_speech_tokens, self.emotion_adv)

    def flow(self) -> FlowConditionals:
        """The CFM's part, aligned as load_flow_conditionals aligns a conds.pt: T' = min(T, F // 2), mel cut to 2T'.

        With an odd F the reference keeps the extra prompt frame and then generates 2N - 1
        frames for N tokens; the engine needs the prompt/generated boundary on a token
        boundary (2 frames per token everywhere), so the last prompt frame is dropped.
        """
        n = min(self.prompt_token.size(1), self.prompt_feat.size(1) // TOKEN_MEL_RATIO)
        return FlowConditionals(self.prompt_token[:, :n].contiguous(),
                                self.prompt_feat[:, : n * TOKEN_MEL_RATIO].contiguous(), self.embedding)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat `t3.<field>` / `gen.<field>` map of contiguous CPU tensors (the voice store's layout)."""
        out = {f"t3.{f}": getattr(self, f) for f in T3_FIELDS}
        out.update({f"gen.{f}": getattr(self, f) for f in GEN_FIELDS})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "VoiceConditionals":
        return cls(**{f: tensors[f"t3.{f}"] for f in T3_FIELDS}, **{f: tensors[f"gen.{f}"] for f in GEN_FIELDS})
