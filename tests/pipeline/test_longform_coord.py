"""Long-form requests in the coordinator: one request id, one stream, one terminal message, on every interface.

First the bookkeeping of `pipeline/longform_coord.py` against a fake coordinator (messages from
the stages are made by hand, so every interleaving is exact), then the real pipeline on the
built-in tiny model: a 5,000-character text, the pipelining order from the stages' own
timestamps, cancel, and the same bytes through the API, a `serve` client, `say --connect` and HTTP.
"""
import uuid

import numpy as np
import pytest
import zmq

from ipc import framing
from ipc.schema import Audio, Cancel, End, Error, Request
from ipc.sockets import SocketFactory
from pipeline.client import RemoteClient, Subscription
from pipeline.coordinator import Record, RequestError
from pipeline.longform import plan_text, stream_long
from pipeline.longform_coord import LONGFORM, SENTENCE_SILENCE, WINDOW, LongFormRequests, Planner
from pipeline.models import ModelSpec
from pipeline.text.budget import SegmentBudget
from pipeline.text.plan import make_plan
from stages.common.lanes import BatchLimits
from stages.common.params import parse_params

from .conftest import run_cli

SR = 24_000


# --- the bookkeeping, against a fake coordinator ---------------------------------------------
class FakeCoordinator:
    """What LongFormRequests uses of the coordinator: records, _deliver, _finish, and a T3 socket (read back here)."""

    def __init__(self):
        ctx = zmq.Context.instance()
        addr = f"inproc://fake-t3-{uuid.uuid4().hex}"
        self.t3 = ctx.socket(zmq.PULL)
        self.t3.bind(addr)
        self.to_t3 = ctx.socket(zmq.PUSH)
        self.to_t3.connect(addr)
        self.records, self.out = {}, []
        self.longform = LongFormRequests(self)

    def _deliver(self, rec, msg):
        self.out.append(msg)

    def _finish(self, rec, msg):
        self.out.append(msg)
        rec.done = True
        self.records.pop(rec.rid)
        self.longform.on_finish(rec.rid)

    def sent(self):
        """Messages sent to T3 since the last call."""
        msgs = []
        while self.t3.poll(0):
            msgs.append(framing.recv(self.t3))
        return msgs

    def close(self):
        self.t3.close(0)
        self.to_t3.close(0)


@pytest.fixture
def fake():
    c = FakeCoordinator()
    yield c
    c.close()


WORDS = SegmentBudget("test", max_text_tokens=4, max_speech_tokens=100, max_chars=100)


def start(fake, n_sentences=3, pause=5):
    text = " ".join(f"Sentence {k} here." for k in range(n_sentences))  # 3 words each: one segment per sentence
    plan = make_plan(text, {"seed": 9}, WORDS, lambda t: len(t.split()), pause)
    assert len(plan.segments) == n_sentences
    fake.records["pub"] = Record("pub")
    fake.longform.begin("pub", plan)
    return plan


def audio(rid, start, n, value=1.0):
    return Audio(rid=rid, start=start, sample_rate=SR, pcm=np.full(n, value, np.float32))


def end(rid, tokens):
    return End(rid=rid, totals={"tokens": tokens, "samples": 960 * tokens}, reason="length", stats={"busy_s.t3": 1.0})


def test_segments_are_republished_in_order_under_one_id_with_exact_pauses(fake):
    plan = start(fake)
    (r0,) = fake.sent()
    assert isinstance(r0, Request) and r0.text == plan.segments[0].text and r0.params == {"seed": 9}
    a, b, c = (f"{r0.rid[:-2]}/{k}" for k in range(3))
    assert r0.rid == a
    fake.longform.on_stage_message(audio(a, 0, 960, 0.5))  # segment 0 streams: segment 1 may enter T3
    (r1,) = fake.sent()
    assert r1.rid == b and r1.params == {"seed": plan.segments[1].seed, "continuation": True}
    fake.longform.on_stage_message(audio(b, 0, 960, 2.0))  # segment 1 is ahead: held back
    fake.longform.on_stage_message(audio(b, 960, 960, 2.0))
    assert fake.sent() == []  # the window (2) is full
    fake.longform.on_stage_message(end(b, 2))  # and it ends before segment 0 does
    assert len(fake.out) == 1
    fake.longform.on_stage_message(audio(a, 960, 960, 0.5))
    fake.longform.on_stage_message(end(a, 2))
    (r2,) = fake.sent()
    assert r2.rid == c and r2.params["continuation"] is True
    fake.longform.on_stage_message(audio(c, 0, 960, 3.0))
    fake.longform.on_stage_message(end(c, 1))
    out = fake.out
    assert {m.rid for m in out} == {"pub"}
    assert [type(m) for m in out].count(End) == 1 and isinstance(out[-1], End)
    chunks = out[:-1]
    assert [m.start for m in chunks] == list(np.cumsum([0] + [m.pcm.size for m in chunks[:-1]]))
    stream = np.concatenate([m.pcm for m in chunks])
    assert np.array_equal(stream, np.concatenate([np.full(1920, 0.5), np.zeros(5), np.full(1920, 2.0), np.zeros(5), np.full(960, 3.0)]))
    assert out[-1].totals == {"tokens": 5, "samples": 4800 + 10} == {"tokens": 5, "samples": plan.total_samples([1920, 1920, 960])}
    assert out[-1].stats["busy_s.t3"] == 3.0 and out[-1].stats["segments"] == 3
    assert fake.longform.active == {} and fake.longform.segments == {}


def test_the_first_error_is_the_one_terminal_message_and_cancels_the_other_segments(fake):
    start(fake)
    (r0,) = fake.sent()
    fake.longform.on_stage_message(audio(r0.rid, 0, 960))
    (r1,) = fake.sent()
    fake.longform.on_stage_message(Error(rid=r1.rid, stage="t3", message="text is too long"))
    err = fake.out[-1]
    assert isinstance(err, Error) and err.rid == "pub" and err.stage == "t3"
    assert err.message == "text is too long (segment 2 of 3)"
    cancels = fake.sent()
    assert [(type(m), m.rid) for m in cancels] == [(Cancel, r0.rid)]  # segment 1 was freed by its own error
    fake.longform.on_stage_message(audio(r0.rid, 960, 960))  # late messages of the request are not its any more
    fake.longform.on_stage_message(end(r0.rid, 2))
    assert [type(m) for m in fake.out] == [Audio, Error]


def test_cancelling_the_public_id_cancels_every_segment_and_ends_with_one_cancel(fake):
    start(fake)
    (r0,) = fake.sent()
    fake.longform.on_stage_message(audio(r0.rid, 0, 960))
    (r1,) = fake.sent()
    assert fake.longform.segment_ids("pub") == [r0.rid, r1.rid]  # what a stage's death re-cancels after the restart
    assert fake.longform.cancel("pub") and not fake.longform.cancel("pub")
    assert [type(m) for m in fake.out] == [Audio, Cancel] and fake.out[-1].rid == "pub"
    assert {(type(m), m.rid) for m in fake.sent()} == {(Cancel, r0.rid), (Cancel, r1.rid)}
    assert fake.longform.active == {} and fake.longform.segments == {} and fake.longform.segment_ids("pub") == []


def test_lost_audio_is_an_error_not_a_short_stream(fake):
    start(fake, n_sentences=2)
    (r0,) = fake.sent()
    fake.longform.on_stage_message(audio(r0.rid, 0, 960))
    fake.longform.on_stage_message(end(r0.rid, 2))  # says 1920 samples, 960 arrived
    assert isinstance(fake.out[-1], Error) and "audio lost" in fake.out[-1].message
    fake.sent()
    start(fake, n_sentences=2)
    (r0,) = fake.sent()
    fake.longform.on_stage_message(audio(r0.rid, 960, 960))  # a gap in the segment's numbering
    assert isinstance(fake.out[-1], Error) and "out of order" in fake.out[-1].message
    assert [m.rid for m in fake.sent()] == [r0.rid]  # and the stages are told to drop it


def test_a_segment_enters_t3_after_the_newest_streams_and_at_most_window_are_in_the_stages(fake):
    assert WINDOW == 2
    start(fake, n_sentences=4)
    base = fake.sent()[0].rid[:-2]

    def seg(k):
        return f"{base}/{k}"

    assert fake.sent() == []  # segment 1 waits for segment 0's first audio
    fake.longform.on_stage_message(audio(seg(0), 0, 960))
    assert [m.rid for m in fake.sent()] == [seg(1)]
    fake.longform.on_stage_message(audio(seg(1), 0, 960))
    assert fake.sent() == []  # two in the stages: the window is full
    fake.longform.on_stage_message(end(seg(0), 1))
    assert [m.rid for m in fake.sent()] == [seg(2)]  # room again, and the newest (1) is streaming
    fake.longform.on_stage_message(end(seg(1), 1))
    assert fake.sent() == []  # room, but segment 2 has not streamed yet
    fake.longform.on_stage_message(end(seg(2), 0))  # a segment that ends with no audio at all frees the way too
    assert [m.rid for m in fake.sent()] == [seg(3)]
    fake.longform.on_stage_message(audio(seg(3), 0, 960))
    fake.longform.on_stage_message(end(seg(3), 1))
    assert isinstance(fake.out[-1], End) and fake.out[-1].totals == {"tokens": 3, "samples": 3 * 960 + 3 * 5}


def test_planner_decides_when_a_request_is_long_form():
    planner = Planner(ModelSpec())
    plan, params = planner.prepare("Hello there.", {"seed": 3})
    assert plan is None and params == {"seed": 3}  # fits one segment: unchanged, no long-form keys
    long = " ".join(f"Sentence number {k} is here, with a clause." for k in range(20))
    plan, params = planner.prepare(long, {"seed": 3})
    assert len(plan.segments) > 1 and params == {"seed": 3, SENTENCE_SILENCE: 0.2}
    assert planner.prepare(long, {"seed": 3, LONGFORM: False})[0] is None  # opt out: T3's own limits apply
    plan, params = planner.prepare("Hello there.", {"seed": 3, LONGFORM: True, SENTENCE_SILENCE: 0.5})
    assert len(plan.segments) == 1 and plan.pause_samples == 12_000 and params[LONGFORM] is True
    with pytest.raises(ValueError, match="longform must be"):
        planner.prepare("Hi.", {LONGFORM: "yes"})
    with pytest.raises(ValueError, match="sentence_silence"):
        planner.prepare("Hi.", {SENTENCE_SILENCE: 99})
    with pytest.raises(ValueError, match="continuation must be"):
        parse_params({"continuation": 1})


def test_a_continuation_does_not_take_the_first_chunk_lane():
    from stages.common.chain import ChainWorker

    class Worker(ChainWorker):
        name = "test"

        def start(self, req):
            return None, []

    w = Worker(4, BatchLimits(max_jobs=2, max_units=100, bucket_step=1, age_limit=3))
    w.handle(Request(rid="new", text="", params={"seed": 1}))
    w.handle(Request(rid="cont", text="", params={"seed": 1, "continuation": True}))
    assert w.table.get("new").lane.first and not w.table.get("cont").lane.first


# --- the real pipeline (built-in tiny model) ----------------------------------------------
LONG = " ".join(f"Paragraph {i} says a few plain words, then stops here." for i in range(95))
TOKENS = {"seed": 5, "ignore_eos": True, "max_new_tokens": 2, "n_timesteps": 1}  # counts and order do not depend on steps


def subscribe_all(tts):
    """A subscriber to every request, welcomed (so it sees everything published after this)."""
    sockets = SocketFactory()
    return sockets, Subscription(sockets, tts.endpoints["pub"], None)


def published(sub, rid):
    """Every message the subscriber receives up to `rid`'s terminal message."""
    msgs = []
    for msg in sub.messages(timeout_ms=30_000):
        msgs.append(msg)
        if msg.rid == rid and isinstance(msg, (End, Error, Cancel)):
            return msgs


def test_a_5000_character_text_is_one_request_id_and_one_stream(tts):
    assert len(LONG) >= 5000
    plan = plan_text(ModelSpec(), LONG, TOKENS, sentence_silence=0.2)
    n = len(plan.segments)
    assert n > 50 and plan.pause_samples == 4800
    sockets, sub = subscribe_all(tts)
    try:
        handle = tts.submit(LONG, **TOKENS)  # long enough to be long-form without asking
        chunks = list(handle.chunks())
        msgs = published(sub, handle.rid)
    finally:
        sockets.close()
    assert {m.rid for m in msgs} == {handle.rid}  # a subscriber sees one id
    assert [type(m) for m in msgs].count(End) == 1 and not any(isinstance(m, (Error, Cancel)) for m in msgs)
    assert [c.start for c in chunks] == list(np.cumsum([0] + [c.pcm.size for c in chunks[:-1]]))
    stream = np.concatenate([c.pcm for c in chunks])
    assert np.concatenate([m.pcm for m in msgs if isinstance(m, Audio)]).tobytes() == stream.tobytes()
    totals = handle.end.totals
    assert stream.size == totals["samples"] == plan.exact_samples == n * 2 * 960 + (n - 1) * 4800
    assert totals["tokens"] == 2 * n and handle.end.stats["segments"] == n
    offsets = plan.offsets([2 * 960] * n)
    for k in range(n - 1):  # exactly 4800 zero samples between segments
        assert not stream[offsets[k] + 1920:offsets[k + 1]].any()
    for k in (0, n // 2, n - 1):  # and each segment is that segment's own request, bit for bit
        solo = tts.synthesize(plan.segments[k].text, **plan.segment_params(k))
        assert stream[offsets[k]:offsets[k] + 1920].tobytes() == solo.tobytes()
    stats = handle.end.stats  # the stages' clocks: first audio before the second segment's T3 finished, and so on
    for k in range(n - 1):
        assert stats[f"segment.{k}.first_audio_ts"] < stats[f"segment.{k + 1}.end_ts.t3"]


def test_the_next_segment_is_in_t3_while_the_previous_is_still_in_hifigan(tts):
    """Ordering from the stages' own timestamps (the end message's per-segment figures)."""
    text = "The first sentence is about here. The second sentence follows it closely."
    params = {"seed": 3, "ignore_eos": True, "max_new_tokens": 100, "n_timesteps": 10}
    assert len(plan_text(ModelSpec(), text, params).segments) == 2
    handle = tts.submit(text, longform=True, **params)
    list(handle.chunks())
    s = handle.end.stats
    assert s["segment.0.first_audio_ts"] < s["segment.1.end_ts.t3"]  # audio flows before the next segment is done in T3
    assert s["segment.1.end_ts.t3"] < s["segment.0.end_ts.hifigan"]  # segment 2 left T3 before segment 1 left HiFiGAN


def test_cancel_mid_way_ends_with_one_terminal_message(tts):
    text = " ".join(f"Sentence {k} is one segment." for k in range(8))
    params = {"seed": 2, "ignore_eos": True, "max_new_tokens": 30, "n_timesteps": 2}
    plan = plan_text(ModelSpec(), text, params)
    assert len(plan.segments) >= 4
    sockets, sub = subscribe_all(tts)
    try:
        handle = tts.submit(text, **params)
        chunks = handle.chunks()
        got = 0
        for c in chunks:  # into the second segment, then stop: closing the iterator cancels
            got = c.start + c.pcm.size
            if got > 30 * 960 + plan.pause_samples:
                break
        chunks.close()
        msgs = published(sub, handle.rid)
    finally:
        sockets.close()
    assert {m.rid for m in msgs} == {handle.rid}
    terminal = [m for m in msgs if isinstance(m, (End, Error, Cancel))]
    assert len(terminal) == 1 and isinstance(terminal[0], Cancel) and msgs[-1] is terminal[0]
    assert tts.synthesize("After the cancel.", **TOKENS).size == 2 * 960  # the stages carry on
    assert tts.coordinator.longform.active == {} and tts.coordinator.longform.segments == {}


def test_bad_long_form_input_fails_before_any_audio(tts):
    with pytest.raises(ValueError, match="text is empty"):
        stream_long(tts, "   ")
    with pytest.raises(ValueError, match="sentence_silence"):
        stream_long(tts, "Hi.", sentence_silence=-1)
    with pytest.raises(ValueError, match="top_p"):
        stream_long(tts, LONG, top_p=2.0)
    with pytest.raises(RequestError, match="too long"):
        list(tts.stream("x" * 3000, longform=False, n_timesteps=2))  # opting out leaves T3's own limit


MEDIUM = " ".join(f"Line {k} has a handful of words, and a clause." for k in range(8))  # ~400 characters


def test_same_seed_same_audio_through_the_api_a_serve_client_say_connect_and_http(tts):
    from pipeline.audio_out import to_int16

    from .http.conftest import Server

    params = {**TOKENS, "seed": 11}
    plan = plan_text(ModelSpec(), MEDIUM, params, sentence_silence=0.1)
    assert len(plan.segments) > 3
    api = np.concatenate([c.pcm for c in stream_long(tts, MEDIUM, sentence_silence=0.1, **params)])
    assert api.size == plan.exact_samples
    eps = tts.endpoints
    with RemoteClient(eps["requests"], eps["pub"]) as client:
        msgs = list(client.stream(MEDIUM, **params, longform=True, sentence_silence=0.1))
    assert len({m.rid for m in msgs}) == 1
    assert np.concatenate([m.pcm for m in msgs]).tobytes() == api.tobytes()
    r = run_cli("say", "--connect", eps["requests"], "--pub", eps["pub"], "--format", "f32le", "--sentence-silence", "0.1",
                "--seed", "11", "--ignore-eos", "--max-new-tokens", "2", "--n-timesteps", "1", MEDIUM)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == api.tobytes() and f"in {len(plan.segments)} segment(s)" in r.stderr.decode()
    default_pause = np.concatenate([c.pcm for c in tts.stream(MEDIUM, **params)])  # long-form by itself, 0.2 s pauses
    server = Server("--connect", eps["requests"], "--pub", eps["pub"])
    try:
        import httpx

        body = {"input": MEDIUM, "response_format": "pcm", "seed": 11, "ignore_eos": True, "max_new_tokens": 2, "n_timesteps": 1}
        resp = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)
    finally:
        server.stop()
    assert resp.status_code == 200, resp.text
    assert resp.content == to_int16(default_pause).tobytes()
