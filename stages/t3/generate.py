"""T3 generation: prefill + one-token decode steps over a static KV cache, one session per request.

`T3Generator` owns the model, the rotary tables and a pool of KV-cache slots; `start()` validates a
request, takes a slot and runs the prefill; `T3Session.step()` does one decode step, so a stage
process can interleave the steps of several concurrent requests round-robin. The only host sync
per step is fetching the sampled id (`.item()`); the decode forward has static shapes (writes by
index, attention over the whole slot under a position mask) so it can be captured as a CUDA graph.
"""
from __future__ import annotations

import operator
from typing import Iterator, Sequence

import torch

from stages.t3.conds import T3Conditionals
from stages.t3.config import T3Config
from stages.t3.kv_cache import KVCachePool
from stages.t3.llama import rope_tables
from stages.t3.model import CFG_ROWS, T3
from stages.t3.sampling import SamplingParams, default_max_new_tokens, next_token_probs, sample

# Default slot length: the prefill of ~300 text tokens plus the reference's 1000-token (40 s) cap.
# The full tables would need cond + 2050 + 2 + 4096 positions (2.9 GB fp32 per slot at chatterbox size).
DEFAULT_MAX_LEN = 1536
FINISH_STOP, FINISH_LENGTH = "stop", "length"


class T3RequestError(RuntimeError):
    """One request failed during generation (e.g. non-finite logits). The generator stays usable."""


class T3Generator:
    def __init__(self, model: T3, cfg: T3Config, max_slots: int = 4, max_len: int = DEFAULT_MAX_LEN,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if max_len < cfg.prefill_len(1) + 1:
            raise ValueError(f"max_len {max_len} is shorter than the smallest request ({cfg.prefill_len(1) + 1})")
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.max_len = max_len
        self.cos, self.sin = rope_tables(cfg, max_len, self.device)  # [max_len, hd] fp32
        self.positions = torch.arange(max_len, device=self.device)  # for the decode visibility mask
        self.pool = KVCachePool(cfg, max_slots, max_len, CFG_ROWS, self.device, dtype)
        # ids a request with ignore_eos may never sample: start/stop and the spare ids above them
        self.control_ids = torch.arange(cfg.speech_vocab_size, device=self.device) >= cfg.num_speech_codes

    def max_new_tokens_limit(self, n_text: int) -> int:
        """Largest max_new_tokens for a text of n_text tokens (speech table and slot length)."""
        # the last sampled token is never fed back, so a request uses prefill + max_new - 1 positions
        return min(self.cfg.max_speech_tokens, self.max_len - self.cfg.prefill_len(n_text) + 1)

    def start(self, text_token_ids: Sequence[int] | torch.Tensor, conds: T3Conditionals,
              params: SamplingParams | None = None) -> "T3Session":
        """Validate, take a slot, prefill. Bad input raises ValueError naming the field, before any compute."""
        params = params or SamplingParams()
        ids = self._check_text(text_token_ids)
        n = len(ids)
        limit = self.max_new_tokens_limit(n)
        if limit < 1:
            raise ValueError(f"text_token_ids: {n} tokens leave no room in a KV-cache slot of max_len "
                             f"{self.max_len} (raise max_len or split the text)")
        params.validate(max_new_tokens_limit=limit)
        max_new = params.max_new_tokens or min(default_max_new_tokens(n), limit)
        conds.check(self.cfg)
        slot = self.pool.acquire()
        session = T3Session(self, slot, ids, conds, params, max_new)
        try:
            session._prefill()
        except BaseException:
            session.close()
            raise
        return session

    def _check_text(self, text_token_ids) -> list[int]:
        if isinstance(text_token_ids, torch.Tensor):
            if text_token_ids.is_floating_point() or text_token_ids.ndim not in (1, 2) or \
                    (text_token_ids.ndim == 2 and text_token_ids.shape[0] != 1):
                raise ValueError(f"text_token_ids must be integer ids [N] or [1, N], got "
                                 f"{text_token_ids.dtype} {list(text_token_ids.shape)}")
            ids = text_token_ids.reshape(-1).tolist()
        else:
            ids = list(text_token_ids)
        if not ids:
            raise ValueError("text_token_ids is empty")
        try:  # accept Python and numpy integers, refuse floats and bools
            if any(isinstance(i, bool) for i in ids):
                raise TypeError
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise ValueError("text_token_ids must be integers") from None
        if len(ids) > self.cfg.max_text_tokens:
            raise ValueError(f"text_token_ids: {len(ids)} tokens exceed the text position table "
                             f"({self.cfg.max_text_tokens})")
        if min(ids) < 0 or max(ids) >= self.cfg.text_vocab_size:
            raise ValueError(f"text_token_ids: ids must be in [0, {self.cfg.text_vocab_size})")
        return ids


class T3Session:
    """One request's generation state in one KV-cache slot. Not thread-safe; drive it from one loop."""

    def __init__(self, gen: T3Generator, slot: int, text_ids: list[int], conds: T3Conditionals,
                 params: SamplingParams, max_new_tokens: int):
        self.gen, self.slot, self.params = gen, slot, params
        self.max_new_tokens = max_new_tokens
        self.n_text = len(text_ids)
        self.generated = 0  # sampled ids so far (including stop/control ids)
        self.finished = False
        self.finish_reason: str | None = None
        self.closed = False
        self._failed = False
        dev, cfg = gen.device, gen.cfg
        self._text = torch.tensor(text_ids, dtype=torch.long, device=dev)
        self._conds = conds
        self._k, self._v = gen.pool.views(slot)
        self._pos = torch.zeros(1, dtype=torch.long, device=dev)  # next sequence position (RoPE, cache index)
        self._speech_pos = torch.ones(1, dtype=torch.long, device=dev)  # learned speech position of the next fed id
        self._seen = torch.zeros(cfg.speech_vocab_size, dtype=torch.bool, device=dev)  # repetition history
        self._seen[cfg.start_speech_token] = True  # the reference's history starts with BOS
        self._banned = gen.control_ids if params.ignore_eos else None
        self._rng = torch.Generator(device=dev).manual_seed(params.resolved_seed())
        self.logits: torch.Tensor | None = None  # [2, V] fp32 logits for the next sample (rows cond, uncond)

    # --- model calls --------------------------------------------------------------
    @torch.inference_mode()
    def _prefill(self) -> None:
        g, m = self.gen, self.gen.model
        c = self._conds
        emotion = torch.full((1, 1, 1), float(self.params.exaggeration), device=g.device)
        cond = m.conditioning(c.speaker_emb.to(g.device), c.cond_prompt_speech_tokens.to(g.device), emotion)
        x = m.prefill_embeds(cond, m.pad_text(self._text))  # [2, L, D]
        length = x.shape[1]
        h = m.tfmr.prefill(x, g.cos[:length], g.sin[:length], self._k, self._v)  # [2, L, D]
        self.logits = m.speech_logits(h[:, -1])  # [2, V]
        self._pos.fill_(length)

    @torch.inference_mode()
    def feed(self, token: torch.Tensor) -> None:
        """Run one cached forward on `token` ([1] long on the device) -> self.logits. Static shapes."""
        g, m = self.gen, self.gen.model
        x = m.speech_step_embeds(token, self._speech_pos)  # [2, 1, D]
        cos, sin = g.cos.index_select(0, self._pos), g.sin.index_select(0, self._pos)  # [1, hd]
        visible = (g.positions <= self._pos).view(1, 1, 1, -1)  # [1, 1, 1, max_len]
        h = m.tfmr.decode(x, cos, sin, self._pos, visible, self._k, self._v)  # [2, 1, D]
        self.logits = m.speech_logits(h[:, 0])  # [2, V]
        self._pos += 1
        self._speech_pos += 1

    # --- the request loop ------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> int | None:
        """Sample one id and feed it back. Returns a speech token (< 6561) or None (stop/control id,
        or already finished). Raises T3RequestError on non-finite logits (the session is closed)."""
        if self.finished:
            return None
        if self.closed:
            raise T3RequestError("step() on a closed T3 session")
        probs, finite = next_token_probs(self.logits, self._seen, self.params, self._banned)
        token = torch.where(finite, sample(probs, self._rng), -1)  # [1]; -1 flags non-finite logits
        tok = int(token.item())  # the one host sync per step: the id handed out
        if tok < 0:
            self._failed = True
            self.close()
            raise T3RequestError(f"non-finite T3 logits at step {self.generated} (slot {self.slot})")
        self.generated += 1
        self._seen[token] = True
        cfg = self.gen.cfg
        if tok == cfg.stop_speech_token and not self.params.ignore_eos:
            self._finish(FINISH_STOP)
            return None
        if self.generated >= self.max_new_tokens:
            self._finish(FINISH_LENGTH)
        else:
            self.feed(token)
        return tok if tok < cfg.num_speech_codes else None

    def _finish(self, reason: str) -> None:
        self.finished, self.finish_reason = True, reason
        self.close()  # the cache is no longer needed: free the slot for the next request

    def close(self) -> None:
        """Free the KV-cache slot. Idempotent; call it in `finally`."""
        if not self.closed:
            self.closed = True
            self.gen.pool.release(self.slot, scrub=self._failed)

    def __enter__(self) -> "T3Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def generate_tokens(gen: T3Generator, text_token_ids: Sequence[int] | torch.Tensor, conds: T3Conditionals,
                    params: SamplingParams | None = None) -> Iterator[int]:
    """Yield the speech tokens (< 6561) of one request; the slot is freed even if the caller stops early.

    The request is validated and prefilled eagerly (bad input raises here, not at the first next()).
    """
    session = gen.start(text_token_ids, conds, params)
    return _drain(session)


def _drain(session: T3Session) -> Iterator[int]:
    try:
        while not session.finished:
            tok = session.step()
            if tok is not None:
                yield tok
    finally:
        session.close()
