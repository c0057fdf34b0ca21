"""The single-process path: T3 -> CFM -> HiFiGAN driven in one process with the stages' streaming classes.

It is the baseline the multi-process pipeline must equal (same classes, same chunk
boundaries, same seeds: the same audio) and what `tts-pipeline say --sequential` runs.
`offline_synthesize` is the whole-utterance path (the ground truth for sample counts).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch

from stages.cfm.part import CFMPart, cfm_noise, load_cfm_part, new_cfm_stream
from stages.cfm.schedule import ChunkSchedule, default_schedule
from stages.common.accounting import check_totals
from stages.common.params import RequestParams, parse_params
from stages.common.spec import ModelSpec
from stages.hifigan.fade import apply_trim_fade
from stages.hifigan.part import load_hifigan_part, new_vocoder_stream, vocoder_generator
from stages.hifigan.streaming import AudioChunk
from stages.t3.generate import generate_tokens
from stages.t3.part import T3Part, load_t3_part
from stages.cfm.voices import store_voices as cfm_store_voices
from stages.t3.voices import VoiceResolver, store_voices, voice_sampling


class Engine:
    """All three stages loaded in this process. T3 runs the stage's own tick, with a batch of one."""

    def __init__(self, spec: ModelSpec, schedule: ChunkSchedule | None = None, voices: VoiceResolver | None = None,
                 voices_dir=None):
        """`voices_dir`: the voice store requests name voices from (as the stage processes resolve them)."""
        self.spec = spec.check().resolved()
        self.model = self.spec.kind  # "chatterbox" or "turbo": which request parameters and defaults apply
        self.schedule = schedule or default_schedule(self.model)
        self.t3: T3Part = load_t3_part(self.spec, max_slots=1)
        self.voices = voices if voices is not None else store_voices(self.t3.conds, self.t3.cfg, voices_dir)
        self.cfm: CFMPart = load_cfm_part(self.spec)
        self.cfm_voices = cfm_store_voices(self.cfm.conds, self.cfm.flow.cfg, self.spec.device, voices_dir,
                                           family=self.cfm.model)
        self.hift = load_hifigan_part(self.spec)

    def text_ids(self, text: str) -> list[int]:
        return self.t3.encode(text)

    def start_t3(self, text: str, req: RequestParams, given: Mapping[str, Any] | None = None) -> Iterator[int]:
        """Validate and prefill (every bad input is rejected here, before any audio); yields the tokens.

        `given`: the raw parameters (whether the request set its own exaggeration)."""
        key, conds = self.voices.resolve(req.voice)
        sampling = voice_sampling(req.sampling, conds, req.voice, given or {})
        return generate_tokens(self.t3.batch, self.text_ids(text), conds, sampling, voice_key=key)

    def stream(self, text: str, params: Mapping[str, Any] | None = None) -> Iterator[AudioChunk]:
        """Synthesize `text`, yielding audio chunks as soon as they are final."""
        req = parse_params(params, self.schedule, self.model)
        self.cfm_voices.resolve(req.voice)  # both stages' parts of the voice load before any audio
        tokens = self.start_t3(text, req, params)
        try:
            yield from stream_tokens(self, req, tokens)
        finally:
            tokens.close()  # frees the T3 slot if the caller stopped early

    def tokens(self, text: str, params: Mapping[str, Any] | None = None) -> list[int]:
        """T3 alone: the valid speech tokens for `text` (for offline synthesis and tests)."""
        return list(self.start_t3(text, parse_params(params, self.schedule, self.model), params))


def stream_tokens(engine: Engine, req: RequestParams, tokens: Iterator[int] | Sequence[int]) -> Iterator[AudioChunk]:
    """CFM + HiFiGAN streaming over a token sequence; checks the sample count at the end."""
    _, conds = engine.cfm_voices.resolve(req.voice)
    cfm, voc = new_cfm_stream(engine.cfm, req, conds), new_vocoder_stream(engine.hift, req)
    emitted = 0
    for tok in tokens:
        for mel in cfm.push([tok]):
            for chunk in voc.push(mel.mel):
                emitted += chunk.pcm.numel()
                yield chunk
    for mel in cfm.finish():
        for chunk in voc.push(mel.mel):
            emitted += chunk.pcm.numel()
            yield chunk
    for chunk in voc.finish():
        emitted += chunk.pcm.numel()
        yield chunk
    check_totals(len(cfm.tokens), cfm.frames_emitted, emitted)


@torch.no_grad()
def offline_synthesize(engine: Engine, tokens: Sequence[int], seed: int, n_timesteps: int | None = None) -> torch.Tensor:
    """Whole-utterance tokens -> waveform [960 * valid tokens]: the reference's path with the request's noise.

    Invalid ids (>= 6561) are dropped first; the model's tail tokens are appended (Turbo: the 3
    silence tokens of its `generate`, so 960 (n + 3) samples). Uses the same per-request noise source and
    vocoder generator as streaming, so the two are directly comparable.
    """
    valid = [int(t) for t in tokens if 0 <= int(t) < 6561] + list(engine.cfm.tail_tokens)
    if not valid:
        return torch.zeros(0)
    n_timesteps = n_timesteps or engine.schedule.n_timesteps
    speech = torch.tensor([valid], dtype=torch.long)
    mel = engine.cfm.flow.infer(speech, engine.cfm.conds, cfm_noise(seed), n_timesteps=n_timesteps)
    wav, _ = engine.hift.inference(mel.float(), vocoder_generator(engine.hift, seed))
    return apply_trim_fade(wav[0]).cpu()
