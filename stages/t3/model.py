"""T3: text tokens + conditioning -> speech-token logits, around the Llama backbone (pure modules).

Parameter names match `t3_cfg.safetensors` so the reference checkpoint loads unchanged.
Running the model (the batched tick, KV cache, sampling) lives in stages/t3/batch.py and
stages/t3/llama_tick.py.
"""
from __future__ import annotations

import torch
from torch import nn

from stages.t3.cond_enc import CondEncoder
from stages.t3.config import T3Config
from stages.t3.llama import LlamaBackbone

CFG_ROWS = 2  # classifier-free guidance: row 0 conditional, row 1 with text token embeddings zeroed


class LearnedPositions(nn.Module):
    """`text_pos_emb` / `speech_pos_emb`: an absolute position table that restarts at 0 per segment."""

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(rows, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.emb(positions)


class T3(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.tfmr = LlamaBackbone(cfg)
        self.cond_enc = CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab_size, d)
        self.speech_emb = nn.Embedding(cfg.speech_vocab_size, d)
        self.text_pos_emb = LearnedPositions(cfg.text_pos_rows, d)
        self.speech_pos_emb = LearnedPositions(cfg.speech_pos_rows, d)
        self.text_head = nn.Linear(d, cfg.text_vocab_size, bias=False)  # unused at inference, in the checkpoint
        self.speech_head = nn.Linear(d, cfg.speech_vocab_size, bias=False)

    # --- conditioning ---------------------------------------------------------
    def prompt_embeds(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """prompt_tokens [B, P] -> speech_emb + speech_pos(0..P-1)  [B, P, D]."""
        pos = torch.arange(prompt_tokens.shape[1], device=prompt_tokens.device)
        return self.speech_emb(prompt_tokens) + self.speech_pos_emb(pos)

    def conditioning(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor,
                     emotion_adv: torch.Tensor) -> torch.Tensor:
        """[B, 256], [B, P] int64, [B, 1, 1] -> conditioning tokens [B, cond_len, D]."""
        dtype = self.speech_emb.weight.dtype
        return self.cond_enc(speaker_emb.to(dtype), self.prompt_embeds(prompt_tokens), emotion_adv.to(dtype))

    # --- input embeddings -----------------------------------------------------
    def pad_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """Unpadded ids [N] -> [start] ids [stop]  [N + 2]."""
        start = text_tokens.new_tensor([self.cfg.start_text_token])
        stop = text_tokens.new_tensor([self.cfg.stop_text_token])
        return torch.cat((start, text_tokens, stop))

    def prefill_embeds(self, cond_emb: torch.Tensor, padded_text: torch.Tensor) -> torch.Tensor:
        """cond_emb [1, C, D], padded_text [N + 2] -> CFG prefill input [2, C + N + 2 + 2, D].

        Layout per row: [cond][text_emb + text_pos(0..N+1)][BOS][BOS], both BOS = speech_emb(start) +
        speech_pos(0) (the reference appends a second BOS). Row 1 zeroes only the text token embeddings.
        """
        cond = cond_emb.expand(CFG_ROWS, -1, -1)  # [2, C, D]
        return torch.cat((cond, self.text_embeds(padded_text)), dim=1)

    def text_embeds(self, padded_text: torch.Tensor) -> torch.Tensor:
        """padded_text [N + 2] -> the part of the prefill after the conditioning [2, N + 2 + 2, D]."""
        n = padded_text.shape[0]
        te = self.text_emb(padded_text)  # [N+2, D]
        text = torch.stack((te, torch.zeros_like(te)))  # [2, N+2, D]
        text = text + self.text_pos_emb(torch.arange(n, device=padded_text.device))
        bos_id = padded_text.new_tensor([self.cfg.start_speech_token])
        bos = self.speech_emb(bos_id) + self.speech_pos_emb(torch.zeros_like(bos_id))  # [1, D]
        bos = bos.expand(CFG_ROWS, 2, -1)  # [2, 2, D]
        return torch.cat((text, bos), dim=1)

    def speech_step_embeds(self, tokens: torch.Tensor, speech_pos: torch.Tensor) -> torch.Tensor:
        """tokens [B], speech_pos [B] (long, on device) -> [B * 2, 1, D]: request b's two CFG rows are
        rows 2b and 2b+1, with the same input."""
        x = self.speech_emb(tokens) + self.speech_pos_emb(speech_pos)  # [B, D]
        return x.repeat_interleave(CFG_ROWS, dim=0).unsqueeze(1)

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Post-norm hidden state [..., D] -> speech logits [..., speech_vocab] (fp32)."""
        return self.speech_head(hidden).float()
