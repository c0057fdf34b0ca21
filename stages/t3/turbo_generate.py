"""Turbo T3 generation: prefill + one-token decode steps over a static KV cache, one session per request.

The solo path (one request, one row) and the reference for a batched tick: `TurboSession.step`
is exactly one row of what `TurboT3.decode_rows` + `turbo_sampling.next_tokens` do for B rows.
The loop follows `T3.inference_turbo`: the first sample comes from the prefill logits and is not
EOS-checked (a 6562 there is fed back like any id); each later step stops before sampling when
every processed logit is -inf and after sampling 6562; at most 1 + 1000 samples. Ids >= 6561
are never handed out (the reference strips the trailing 6562 and `generate` drops the others).
"""
from __future__ import annotations

import operator
from typing import Callable, Iterator, Sequence

import torch

from stages.t3.generate import FINISH_LENGTH, FINISH_STOP, T3RequestError
from stages.t3.kv_cache import KVCachePool
from stages.t3.turbo_conds import TurboT3Conditionals
from stages.t3.turbo_config import TurboT3Config
from stages.t3.turbo_model import TurboT3
from stages.t3.turbo_sampling import (ROW_EXHAUSTED, ROW_NON_FINITE, TURBO_MAX_SAMPLES, RowParams,
                                      TurboSamplingParams, next_tokens, record_samples, reset_history)

# Default slot length: the prefill of a 375-token voice with ~670 text tokens plus the reference's
# 1001 samples (384 MiB fp32 / 192 MiB bf16 per slot at `turbo` size). Must not exceed n_positions.
DEFAULT_MAX_LEN = 2048
ROWS_PER_REQUEST = 1  # no CFG: one KV-cache row per request


class TurboT3Generator:
    def __init__(self, model: TurboT3, cfg: TurboT3Config, max_slots: int = 4, max_len: int = DEFAULT_MAX_LEN,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        max_len = min(max_len, cfg.n_positions)  # wpe has no row past n_positions - 1
        if max_len < cfg.prefill_len(1, 1) + 1:
            raise ValueError(f"max_len {max_len} is shorter than the smallest request ({cfg.prefill_len(1, 1) + 1})")
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.max_len = max_len
        self.positions = torch.arange(max_len, device=self.device)  # for the decode visibility mask
        self.pool = KVCachePool(cfg, max_slots, max_len, ROWS_PER_REQUEST, self.device, dtype)
        # ids a request with ignore_eos may never sample: BOS/EOS
        self.control_ids = torch.arange(cfg.speech_vocab_size, device=self.device) >= cfg.num_speech_codes

    def max_new_tokens_limit(self, n_text: int, n_prompt: int) -> int:
        """Largest max_new_tokens (samples) for a request: the reference's 1001 and the slot's room."""
        # the last sample is never fed back, so a request uses prefill + samples - 1 positions
        return min(TURBO_MAX_SAMPLES, self.max_len - self.cfg.prefill_len(n_text, n_prompt) + 1)

    def start(self, text_token_ids: Sequence[int] | torch.Tensor, conds: TurboT3Conditionals,
              params: TurboSamplingParams | None = None) -> "TurboSession":
        """Validate, take a slot, prefill. Bad input raises ValueError naming the field, before any compute."""
        params = params or TurboSamplingParams()
        ids = check_text_ids(text_token_ids, self.cfg)
        conds.check(self.cfg)
        limit = self.max_new_tokens_limit(len(ids), conds.n_prompt)
        if limit < 1:
            raise ValueError(f"text_token_ids: {len(ids)} tokens leave no room in a KV-cache slot of max_len "
                             f"{self.max_len} (raise max_len or split the text)")
        params.validate(max_new_tokens_limit=limit)
        max_new = params.max_new_tokens or limit
        slot = self.pool.acquire()
        session = TurboSession(self, slot, ids, conds, params, max_new)
        try:
            session._prefill()
        except BaseException:
            session.close()
            raise
        return session


def check_text_ids(text_token_ids, cfg: TurboT3Config) -> list[int]:
    """Unpadded text ids [N] or [1, N] -> list; ValueError naming `text_token_ids` otherwise."""
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
    if len(ids) > cfg.max_text_tokens:
        raise ValueError(f"text_token_ids: {len(ids)} tokens exceed Turbo's text limit ({cfg.max_text_tokens})")
    if min(ids) < 0 or max(ids) >= cfg.text_vocab_size:
        raise ValueError(f"text_token_ids: ids must be in [0, {cfg.text_vocab_size})")
    return ids


class TurboSession:
    """One request's generation state in one KV-cache slot (one row). Drive it from one loop."""

    def __init__(self, gen: TurboT3Generator, slot: int, text_ids: list[int], conds: TurboT3Conditionals,
                 params: TurboSamplingParams, max_new_tokens: int):
        self.gen, self.slot, self.params = gen, slot, params
        self.max_new_tokens = max_new_tokens
        self.n_text = len(text_ids)
        self.generated = 0  # samples so far (EOS and BOS included)
        self.finished = False
        self.finish_reason: str | None = None
        self.closed = False
        self._failed = False
        dev, cfg = gen.device, gen.cfg
        self._text = torch.tensor(text_ids, dtype=torch.long, device=dev)
        self._conds = conds
        self._k, self._v = gen.pool.views(slot)  # per layer [1, H, max_len, hd]
        self._pos = torch.zeros(1, dtype=torch.long, device=dev)  # next cache / wpe position
        self._rows = RowParams.from_params([params], dev)
        self._seen = torch.zeros(1, cfg.speech_vocab_size, dtype=torch.bool, device=dev)  # repetition history
        reset_history(self._seen, 0, cfg.start_speech_token)
        self._first = torch.ones(1, dtype=torch.bool, device=dev)
        self._rng = torch.Generator(device=dev).manual_seed(params.resolved_seed())
        self.logits: torch.Tensor | None = None  # [1, V] fp32 logits for the next sample
        self.last_probs: torch.Tensor | None = None  # [1, V] what the last step sampled from (tests)

    # --- model calls --------------------------------------------------------------
    @torch.inference_mode()
    def _prefill(self) -> None:
        g, m, c = self.gen, self.gen.model, self._conds
        cond = m.conditioning(c.speaker_emb.to(g.device), c.cond_prompt_speech_tokens.to(g.device))  # [1, 1+P, D]
        x = m.prefill_embeds(cond, self._text)  # [1, L, D]
        h = m.tfmr.prefill(x, self._k, self._v)  # [1, L, D]
        self.logits = m.speech_logits(h[:, -1])  # [1, V]
        self._pos.fill_(x.shape[1])

    @torch.inference_mode()
    def feed(self, token: torch.Tensor) -> None:
        """One cached forward on `token` ([1] long on the device) -> self.logits. Static shapes."""
        g = self.gen
        visible = (g.positions <= self._pos).view(1, 1, 1, -1)  # [1, 1, 1, max_len]
        self.logits = g.model.decode_rows(token, self._pos, visible, self._k, self._v)  # [1, V]
        self._pos += 1

    def noise(self) -> torch.Tensor:
        """This step's Exp(1) draws [1, V] from the request's generator."""
        return torch.empty_like(self.logits).exponential_(generator=self._rng)

    # --- the request loop ------------------------------------------------------------
    @torch.inference_mode()
    def step(self, choose: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int | None:
        """Sample one id and feed it back. Returns a speech token (< 6561) or None (BOS/EOS, a stop, or
        already finished). `choose(probs [1, V]) -> [1] long` replaces the exponential race (tests
        inject the reference's draws). Raises T3RequestError on non-finite logits (the session is closed)."""
        if self.finished:
            return None
        if self.closed:
            raise T3RequestError("step() on a closed Turbo T3 session")
        g, cfg = self.gen, self.gen.cfg
        noise = self.noise() if choose is None else torch.ones_like(self.logits)
        out = next_tokens(self.logits, self._rows, self._seen, self._first, noise, g.control_ids)
        if choose is not None:
            out = out._replace(tokens=choose(out.probs).to(out.tokens))
        self.last_probs = out.probs
        tok, status = torch.stack((out.tokens[0], out.status[0])).tolist()  # the one host sync per step
        if status == ROW_NON_FINITE:
            self._failed = True
            self.close()
            raise T3RequestError(f"non-finite Turbo T3 logits at sample {self.generated} (slot {self.slot})")
        if status == ROW_EXHAUSTED:  # the reference's break before sampling
            self._finish(FINISH_STOP)
            return None
        first = self.generated == 0
        self.generated += 1
        record_samples(self._seen, out.tokens, self._first)
        self._first.fill_(False)
        if tok == cfg.stop_speech_token and not first and not self.params.ignore_eos:
            self._finish(FINISH_STOP)
            return None
        if self.generated >= self.max_new_tokens:
            self._finish(FINISH_LENGTH)
        else:
            self.feed(out.tokens)
        return tok if tok < cfg.num_speech_codes else None

    def _finish(self, reason: str) -> None:
        self.finished, self.finish_reason = True, reason
        self.close()  # the cache is no longer needed: free the slot for the next request

    def close(self) -> None:
        """Free the KV-cache slot. Idempotent; call it in `finally`."""
        if not self.closed:
            self.closed = True
            self.gen.pool.release(self.slot, scrub=self._failed)

    def __enter__(self) -> "TurboSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def generate_turbo_tokens(gen: TurboT3Generator, text_token_ids, conds: TurboT3Conditionals,
                          params: TurboSamplingParams | None = None) -> Iterator[int]:
    """Yield the speech tokens (< 6561) of one request; validated and prefilled eagerly."""
    session = gen.start(text_token_ids, conds, params)
    return _drain(session)


def _drain(session: TurboSession) -> Iterator[int]:
    try:
        while not session.finished:
            tok = session.step()
            if tok is not None:
                yield tok
    finally:
        session.close()
