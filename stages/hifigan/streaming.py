"""Per-request HiFiGAN streaming: mel chunks in, final audio samples out.

Driven by the HiFiGAN stage process (batched across requests: `plan_push`/`plan_finish`,
`complete`) and by the single-process path (`push`, `finish`). No sockets.

Why streamed audio equals whole-utterance vocoding (docs/streaming.md):
- The harmonic source is continuous: its start phase is drawn once per request, its phase
  accumulates across chunks through a float64 carry, and its noise is drawn frame by frame,
  in order, from the request's generator, which yields exactly the values one whole draw
  would (see HiFT.draw_noise). So chunking cannot change the source.
- f0 of a frame depends on `f0_context` mel frames either side; it (and the source it
  drives) is committed only once those frames exist.
- Each call re-runs `left` frames of already-emitted context (the decoder's left receptive
  field) and holds back the last `right` frames (its right receptive field, through mel
  and source): every sample emitted before the end can no longer change.
- `finish` decodes up to the true end and emits every remaining sample (cause B): the
  total is exactly 480 samples per mel frame received.
- The 40 ms start fade touches only samples 0..959 of the utterance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stages.hifigan.fade import apply_trim_fade
from stages.hifigan.generator import HiFT


@dataclass
class AudioChunk:
    start: int  # index of the first sample within the request
    pcm: torch.Tensor  # [n] float32 on CPU, in [-0.99, 0.99]


@dataclass
class DecodeJob:
    """One decode call of a request: its window of mel and source, and which of its samples are emitted."""

    mel: torch.Tensor  # [1, 80, T] mel frames [d0, M) of the request
    source: torch.Tensor  # [1, 1, T * 480] the source over the same frames
    start: int  # index of the first emitted sample within the request
    lo: int  # emitted samples are [lo, hi) of the window's T * 480
    hi: int
    left_margin: int  # frames of the window before its first emitted sample
    right_margin: int  # frames of the window after its last emitted sample

    @property
    def frames(self) -> int:
        return self.mel.shape[-1]


@dataclass(frozen=True)
class Window:
    """A decode window's geometry, known before any model call (for the batcher)."""

    frames: int  # T = M - d0
    left_margin: int
    right_margin: int


def exact_lookahead_frames(hift: HiFT) -> int:
    """Mel frames after a frame that can still change its samples (decode directly, or via f0 -> source)."""
    cfg = hift.cfg
    _, mel_right = cfg.decode_context_frames()
    _, src_right = cfg.decode_context_source_samples()
    via_source = math.ceil(src_right / cfg.hop_samples) + cfg.f0_context_frames()
    return max(mel_right, via_source) + 1  # +1: a sample's own frame boundary rounding


def left_context_frames(hift: HiFT) -> int:
    """Mel frames of already-emitted context re-run before new samples, covering decode's left receptive field."""
    cfg = hift.cfg
    mel_left, _ = cfg.decode_context_frames()
    src_left, _ = cfg.decode_context_source_samples()
    return max(mel_left, math.ceil(src_left / cfg.hop_samples)) + 1


class VocoderStream:
    """The vocoder state of one request.

    `push`/`finish` decode at once (the single-process path). A stage that batches requests
    splits each step in two: `plan_push`/`plan_finish` take the mel, commit f0 and the source
    (per request, float64 phase carry) and return the decode job (None if no sample became
    final); the batch decodes several requests' jobs in one call (stages/hifigan/batch.py);
    `complete` crops and fades the emitted samples. Both ways run the same code.
    """

    def __init__(self, hift: HiFT, generator: torch.Generator, lookahead_frames: int | str = "exact", fade: bool = True):
        self.hift, self.gen, self.fade = hift, generator, fade
        cfg = hift.cfg
        self.hop = cfg.hop_samples  # 480 samples per mel frame
        self.n_mels = cfg.in_channels  # 80 mel bins
        self.f0_ctx = cfg.f0_context_frames()
        self.left = left_context_frames(hift)
        self.right = exact_lookahead_frames(hift) if lookahead_frames == "exact" else int(lookahead_frames)
        self.start_phase = hift.draw_start_phase(generator)  # [1, 9, 1], drawn first, as offline does
        dev = hift.stft_window.device
        # Buffers hold frames/samples from absolute index `*_base` on.
        self.mel = torch.zeros(1, self.n_mels, 0, device=dev)  # [1, 80, kept frames]
        self.mel_base = 0
        self.noise = torch.zeros(1, cfg.n_harmonics_total, 0, device=dev)  # [1, 9, samples of frames >= f0_done]
        self.source = torch.zeros(1, 1, 0, device=dev)  # [1, 1, committed source samples from src_base]
        self.src_base = 0
        self.cycles: torch.Tensor | None = None  # float64 phase carry at sample f0_done * hop
        self.frames_received = 0
        self.f0_done = 0  # frames whose f0 and source are committed
        self.emitted = 0  # samples planned (always whole frames); emitted once their job completes
        self.samples_out = 0  # samples emitted (jobs completed)
        self.finished = False

    @property
    def samples_emitted(self) -> int:
        return self.samples_out

    # --- the solo path -------------------------------------------------------------------
    def push(self, mel: torch.Tensor) -> list[AudioChunk]:
        """Add mel frames [80, n]; return the samples that became final (possibly none)."""
        return self._run(self.plan_push(mel))

    def finish(self) -> list[AudioChunk]:
        """End of stream: emit every remaining sample."""
        return self._run(self.plan_finish())

    def _run(self, job: DecodeJob | None) -> list[AudioChunk]:
        from stages.hifigan.batch import decode_jobs  # here: batch.py imports this module's job types

        return [] if job is None else [self.complete(job, decode_jobs(self.hift, [job])[0])]

    # --- plan / complete -----------------------------------------------------------------
    def window(self, new_frames: int, final: bool) -> Window | None:
        """The decode window after `new_frames` more frames (and the end, if final), or None if no sample would become final. No model call."""
        M = self.frames_received + new_frames
        out_frames = M if final else max(self.emitted // self.hop, M - self.right)
        if out_frames * self.hop <= self.emitted:
            return None
        d0 = max(0, self.emitted // self.hop - self.left)  # first frame of the decode window
        return Window(frames=M - d0, left_margin=self.emitted // self.hop - d0, right_margin=M - out_frames)

    @torch.no_grad()
    def plan_push(self, mel: torch.Tensor) -> DecodeJob | None:
        """Take mel frames [80, n]; commit f0 and the source that became final; the decode job of the samples that did (or None)."""
        if self.finished:
            raise RuntimeError("push after finish")
        if mel.ndim != 2 or mel.shape[0] != self.n_mels:
            raise ValueError(f"mel chunk must be [{self.n_mels}, n], got {list(mel.shape)}")
        n = mel.shape[1]
        if n:
            dev = self.mel.device
            self.mel = torch.cat([self.mel, mel.to(dev, torch.float32).unsqueeze(0)], dim=2)
            self.noise = torch.cat([self.noise, self.hift.draw_noise(n * self.hop, self.gen)], dim=2)
            self.frames_received += n
        return self._plan(final=False)

    @torch.no_grad()
    def plan_finish(self) -> DecodeJob | None:
        """End of stream: the decode job of every remaining sample (None if there is none)."""
        if self.finished:
            return None
        job = self._plan(final=True)
        self.finished = True
        return job

    def complete(self, job: DecodeJob, wav: torch.Tensor) -> AudioChunk:
        """The job's decoded window wav [T * 480] -> the chunk of final samples (faded at the start). Jobs complete in plan order."""
        if job.start != self.samples_out:
            raise RuntimeError(f"audio at sample {job.start} completed out of order (expected {self.samples_out})")
        piece = wav[job.lo : job.hi]
        if self.fade and job.start < 2 * self.hop:
            piece = apply_trim_fade(piece, start_sample=job.start)
        self.samples_out += job.hi - job.lo
        return AudioChunk(job.start, piece.float().cpu().contiguous())

    def _plan(self, final: bool) -> DecodeJob | None:
        M = self.frames_received
        win = self.window(0, final)
        if win is None:
            return None
        out_frames = M - win.right_margin
        source = self._source_upto(M, commit_upto=M if final else max(self.f0_done, M - self.f0_ctx))
        d0 = M - win.frames
        mel = self.mel[:, :, d0 - self.mel_base : M - self.mel_base]  # [1, 80, M - d0]
        src = source[:, :, d0 * self.hop - self.src_base :]  # [1, 1, (M - d0) * hop]
        job = DecodeJob(mel=mel, source=src, start=self.emitted, lo=self.emitted - d0 * self.hop,
                        hi=out_frames * self.hop - d0 * self.hop, left_margin=win.left_margin, right_margin=win.right_margin)
        self.emitted = out_frames * self.hop
        self._trim()
        return job

    def _source_upto(self, M: int, commit_upto: int) -> torch.Tensor:
        """Committed source plus a tentative tail up to frame M: [1, 1, (M*hop - src_base)].

        f0 and source of frames [f0_done, commit_upto) become final; frames [commit_upto, M)
        are computed from f0 that may still change and are not kept.
        """
        hop = self.hop
        if M > self.f0_done:
            a = max(0, self.f0_done - self.f0_ctx)  # f0 window start: enough left context for exact f0
            f0 = self.hift.predict_f0(self.mel[:, :, a - self.mel_base : M - self.mel_base])  # [1, M - a]
            f0 = self.hift.upsample_f0(f0[:, self.f0_done - a :])  # [1, (M - f0_done) * hop]
            k = (commit_upto - self.f0_done) * hop
            done, cycles = self.hift.source_from_f0(f0[:, :k], self.start_phase, self.noise[:, :, :k], self.cycles)
            tail, _ = self.hift.source_from_f0(f0[:, k:], self.start_phase, self.noise[:, :, k:], cycles)
            self.source = torch.cat([self.source, done], dim=2)
            self.noise = self.noise[:, :, k:]
            self.cycles = cycles
            self.f0_done = commit_upto
            return torch.cat([self.source, tail], dim=2)
        return self.source

    def _trim(self) -> None:
        """Drop frames and samples no later call will read."""
        keep_from = max(0, min(self.emitted // self.hop - self.left, self.f0_done - self.f0_ctx))
        if keep_from > self.mel_base:
            self.mel = self.mel[:, :, keep_from - self.mel_base :]
            self.mel_base = keep_from
        src_from = max(0, self.emitted // self.hop - self.left) * self.hop
        if src_from > self.src_base:
            self.source = self.source[:, :, src_from - self.src_base :]
            self.src_base = src_from
