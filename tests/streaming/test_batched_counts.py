"""Exact sample counts through the batched stage workers: every token count 0-60 at once, sharing batches."""
import numpy as np

from ipc.schema import Audio, End
from stages.cfm.worker import CFMWorker
from stages.hifigan.worker import HiFiGANWorker
from tests.chain import interleave, of, pump, token_messages


def test_every_token_count_gives_960_samples_per_token_in_a_batch(engine):
    cfm, voc = CFMWorker(engine.cfm), HiFiGANWorker(engine.hift)
    schedules = [{"first_chunk_tokens": 1, "growth": 1.0, "max_hop_tokens": 25}, {"first_chunk_tokens": 4},
                 {"first_chunk_tokens": 10, "vocoder_lookahead_frames": 4}]
    msgs = interleave(*[token_messages(f"n{n}", n, n, step=1 + n % 4, n_timesteps=1, **schedules[n % 3]) for n in range(61)])
    out = pump([cfm, voc], *msgs)
    for n in range(61):
        audio = of(f"n{n}", Audio, out)
        assert [m.start for m in audio] == list(np.cumsum([0] + [m.pcm.size for m in audio]))[: len(audio)], n
        assert sum(m.pcm.size for m in audio) == 960 * n
        (end,) = of(f"n{n}", End, out)
        assert end.totals == {"tokens": n, "frames": 2 * n, "samples": 960 * n}
    assert len(cfm.table) == len(voc.table) == 0 and not cfm.batch
