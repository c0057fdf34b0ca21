"""The HiFiGAN stage's batched decode: several requests' decode windows in one `HiFT.decode` call, padded to one length.

Called by the HiFiGAN worker (stages/hifigan/worker.py) and, with one job, by
`VocoderStream.push/finish` (the solo path: exactly one unpadded `decode`). Pure tensor code.

f0 and the harmonic source stay per request (stages/hifigan/streaming.py: float64 f0, float64
phase carry); only the decode is batched. A window padded on one side reads the padding
instead of its own edge (the convolutions' zero padding, the STFT's reflect padding, the iSTFT
envelope), and that reaches the output up to 15 frames from that side (the decoder's receptive
field, `decode_window_context_frames()` = (15, 15)) and no further. So a job is padded only on a
side with at least that many frames between the padding and its first/last emitted sample
(the `Window` margins):

- on the right (the window starts the padded row) when its right margin covers the edge: every
  job before a request's end, with the exact lookahead (21 frames held back);
- on the left (the window ends the padded row, so its own right edge is the row's edge) when only
  its left margin does: a request's final chunk after the first 16 frames, or a short lookahead;
- not at all otherwise (the first chunk is also the last: a short utterance): such a job shares a
  call only with jobs it can be the length of (`Shape.exact`).

Padding is whole mel frames, so the STFT frames and every strided layer stay aligned.
"""
from __future__ import annotations

from typing import Sequence

import torch

from stages.common.lanes import Shape
from stages.hifigan.generator import HiFT
from stages.hifigan.streaming import DecodeJob, Window


def edge_frames(hift: HiFT) -> tuple[int, int]:
    """(left, right): frames from a window's padded side within which its output depends on what lies beyond that side."""
    return hift.cfg.decode_window_context_frames()


def job_shape(window: Window | DecodeJob, edge: tuple[int, int]) -> Shape:
    """The batcher's view of a decode window: its frames, and whether it can be padded at all."""
    return Shape(window.frames, exact=window.left_margin < edge[0] and window.right_margin < edge[1])


def placement(job: DecodeJob, length: int, edge: tuple[int, int]) -> int:
    """Frame offset of the job's window within a row of `length` frames (0 = padded on the right)."""
    pad = length - job.frames
    if pad == 0 or job.right_margin >= edge[1]:
        return 0
    if job.left_margin >= edge[0]:
        return pad
    raise ValueError(f"a decode window of {job.frames} frames with margins {job.left_margin}/{job.right_margin} "
                     f"cannot be padded to {length} frames")


@torch.no_grad()
def decode_jobs(hift: HiFT, jobs: Sequence[DecodeJob], length: int | None = None) -> list[torch.Tensor]:
    """Decode the jobs' windows in one call, padded to `length` frames (default: the longest).  -> wav [T * 480] each"""
    if len(jobs) == 1 and (length is None or length == jobs[0].frames):
        return [hift.decode(jobs[0].mel, jobs[0].source)[0]]  # the solo call, unpadded
    hop = hift.cfg.hop_samples
    length = length or max(j.frames for j in jobs)
    edge = edge_frames(hift)
    ref = jobs[0].mel
    mel = torch.zeros(len(jobs), ref.shape[1], length, device=ref.device, dtype=ref.dtype)  # [B, 80, L]
    src = torch.zeros(len(jobs), 1, length * hop, device=ref.device, dtype=jobs[0].source.dtype)  # [B, 1, L * 480]
    offsets = []
    for i, job in enumerate(jobs):
        off = placement(job, length, edge)
        mel[i, :, off : off + job.frames] = job.mel[0]
        src[i, :, off * hop : (off + job.frames) * hop] = job.source[0]
        offsets.append(off)
    wav = hift.decode(mel, src)  # [B, L * 480]
    return [wav[i, off * hop : (off + job.frames) * hop] for i, (job, off) in enumerate(zip(jobs, offsets))]
