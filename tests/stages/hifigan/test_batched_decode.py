"""Batched vocoder decode: a batch of one is the solo decode; padded windows (on the right, or on the left for final
chunks) give their solo samples within the golden decode tolerance; a final chunk padded on the right would not; the
HiFiGAN worker's batched requests equal each alone (bit for bit when exact, the CPU default), with exact sample counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ipc.schema import Audio, End
from stages.common.lanes import padded_length
from stages.common.params import parse_params
from stages.common.spec import ModelSpec
from stages.hifigan.batch import decode_jobs, edge_frames, job_shape, placement
from stages.hifigan.part import load_hifigan_part, new_vocoder_stream
from stages.hifigan.worker import HiFiGANWorker
from tests.chain import drain, interleave, mel_messages, of
from tests.golden import load_case, rel_l2, tolerance

DECODE_TOL = tolerance("hift")  # 1e-5: the golden tolerance of `decode` (f0 and the source are per request, unbatched)


@pytest.fixture(scope="module")
def hift():
    return load_hifigan_part(ModelSpec())


@pytest.fixture(scope="module")
def mel():
    m = load_case("hift")["mel"][0]  # [80, 24] a real (standardised) log-mel
    return torch.cat([m, m.flip(-1), m, m.flip(-1), m], dim=-1)  # [80, 120]


def jobs_of(hift, mel, seed, chunks, **params):
    """Every decode job of one request, planned as the stage plans them (each job followed by the solo decode, as push does)."""
    stream = new_vocoder_stream(hift, parse_params({"seed": seed, **params}))
    jobs, a = [], 0
    for n in chunks:
        jobs.append(stream.plan_push(mel[:, a : a + n]))
        a += n
    jobs.append(stream.plan_finish())
    return [j for j in jobs if j is not None]


def emitted(job, wav):
    return wav[job.lo : job.hi]


def test_a_batch_of_one_is_the_solo_decode(hift, mel):
    for job in jobs_of(hift, mel, 1, [30, 40, 50]):
        assert torch.equal(decode_jobs(hift, [job])[0], hift.decode(job.mel, job.source)[0])


def test_padded_windows_equal_their_solo_samples(hift, mel):
    edge = edge_frames(hift)
    jobs = (jobs_of(hift, mel, 1, [8, 16, 32, 64]) + jobs_of(hift, mel, 2, [50, 70], vocoder_lookahead_frames=4)
            + jobs_of(hift, mel[:, :30], 3, [30]))
    paddable = [j for j in jobs if not job_shape(j, edge).exact]
    right = [j for j in paddable if placement(j, j.frames + 1, edge) == 0]
    left = [j for j in paddable if placement(j, j.frames + 1, edge) > 0]
    assert right and left and any(j.right_margin == 0 for j in left)  # final chunks are padded on the left
    assert any(job_shape(j, edge).exact for j in jobs)  # the short request: its only chunk is first and last
    length = max(j.frames for j in paddable) + 13
    for job, wav in zip(paddable, decode_jobs(hift, paddable, length)):
        assert wav.numel() == 480 * job.frames
        assert rel_l2(emitted(job, wav), emitted(job, decode_jobs(hift, [job])[0])) < DECODE_TOL


def test_a_final_chunk_padded_on_the_right_would_change(hift, mel):
    """Why final chunks go on the left: their last samples read the window's own right edge."""
    final = jobs_of(hift, mel, 1, [60, 60])[-1]
    assert final.right_margin == 0
    solo = emitted(final, decode_jobs(hift, [final])[0])
    naive = hift.decode(F.pad(final.mel, (0, 10)), F.pad(final.source, (0, 4800)))[0]
    assert rel_l2(emitted(final, naive), solo) > 100 * DECODE_TOL
    with pytest.raises(ValueError, match="cannot be padded"):
        short = jobs_of(hift, mel[:, :20], 4, [20])[-1]
        placement(short, short.frames + 8, edge_frames(hift))


def test_exact_windows_share_a_call_only_at_their_length(hift, mel):
    edge = edge_frames(hift)
    short = job_shape(jobs_of(hift, mel[:, :20], 4, [20])[-1], edge)
    other = job_shape(jobs_of(hift, mel, 1, [60])[0], edge)
    assert short.exact and not other.exact
    assert padded_length([short], 8) == short.size
    expected = None if other.size > short.size else short.size
    assert padded_length([short, other], 8) == expected


@pytest.mark.parametrize("exact", [None, False], ids=["default-exact", "padded"])
@pytest.mark.parametrize("n_requests", [1, 3, 8])
def test_worker_batched_requests_equal_each_alone(hift, mel, n_requests, exact, monkeypatch):
    worker = HiFiGANWorker(hift, exact=exact)
    assert worker.exact == (exact is None)  # the CPU default is exact
    calls = []  # (jobs in the call, final chunks padded on the left in it)

    def recording(hift, jobs, length=None):
        left = sum(j.right_margin == 0 and length is not None and placement(j, length, worker.edge) > 0 for j in jobs)
        calls.append((len(jobs), left))
        return decode_jobs(hift, jobs, length)

    monkeypatch.setattr("stages.hifigan.worker.decode_jobs", recording)
    schedules = [[8, 16, 32, 64], [2] * 10 + [100], [120], [40, 40, 40], [13, 7, 60, 40]]
    reqs = []
    for i in range(n_requests):
        frames = 90 - 10 * (i % 4)
        chunks = schedules[i % len(schedules)]
        chunks = [c for c in np.diff(np.minimum(np.cumsum([0] + chunks), frames)).tolist() if c]
        reqs.append((f"v{i}", 40 + i, frames, chunks, {"vocoder_lookahead_frames": 4} if i % 3 == 2 else {}))
    msgs = interleave(*[mel_messages(rid, mel[:, :f].numpy(), chunks, seed, **p) for rid, seed, f, chunks, p in reqs])
    out = [m2 for m in msgs for m2 in worker.handle(m)]
    assert not [m for m in out if isinstance(m, Audio)]  # handle() only queued the chunks
    out += drain(worker)
    for rid, seed, frames, chunks, params in reqs:
        stream = new_vocoder_stream(hift, parse_params({"seed": seed, **params}))
        ref, a = [], 0
        for n in chunks:
            ref += stream.push(mel[:, a : a + n])
            a += n
        ref += stream.finish()
        got = of(rid, Audio, out)
        assert [m.start for m in got] == [c.start for c in ref]
        pcm, ref_pcm = np.concatenate([m.pcm for m in got]), torch.cat([c.pcm for c in ref])
        assert pcm.size == 480 * frames == ref_pcm.numel()
        if n_requests == 1 or exact is None:
            assert np.array_equal(pcm, ref_pcm.numpy())
        assert rel_l2(torch.from_numpy(pcm), ref_pcm) < DECODE_TOL
        tail = slice(-480 * 3, None)  # the final chunk's last frames
        assert rel_l2(torch.from_numpy(pcm[tail]), ref_pcm[tail]) < DECODE_TOL
        (end,) = of(rid, End, out)
        assert end.totals == {"tokens": frames // 2, "frames": frames, "samples": 480 * frames}
    assert len(worker.table) == 0 and not worker.busy()
    if n_requests > 1 and exact is False:
        assert max(n for n, _ in calls) > 1 and any(n > 1 and left for n, left in calls)
