"""The T3 tick: many requests per forward, each getting exactly its solo tokens; the voice-prefix cache."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from stages.t3.conds import T3Conditionals, builtin_t3_conditionals
from stages.t3.generate import admission, new_t3_batch
from stages.t3.sampling import SamplingParams
from stages.t3.voices import VoiceTable
from tests.golden import rel_l2, tolerance


@pytest.fixture()
def conds(tiny_cfg):
    return builtin_t3_conditionals(tiny_cfg)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny matmuls run faster on one thread; bit-identity of logits needs it (docs/t3.md)."""


def other_voice(conds: T3Conditionals) -> T3Conditionals:
    g = torch.Generator().manual_seed(7)
    spk = torch.rand(conds.speaker_emb.shape, generator=g)
    return T3Conditionals(spk / spk.norm(), torch.randint(0, 6561, (1, 90), generator=g), conds.emotion_adv)


def make_requests(n: int, seed: int = 0):
    """n requests with different texts, lengths, seeds and sampling parameters."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = [rng.randrange(3, 700) for _ in range(rng.randint(3, 30))]
        p = SamplingParams(seed=1000 + i, max_new_tokens=rng.randint(8, 24), ignore_eos=True,
                           temperature=rng.choice([0.7, 1.0]), top_p=rng.choice([1.0, 0.9]),
                           min_p=rng.choice([0.0, 0.05]), repetition_penalty=rng.choice([1.0, 1.2]),
                           cfg_weight=rng.choice([0.0, 0.5]), exaggeration=rng.choice([0.5, 0.7]))
        out.append((f"r{i}", text, p))
    return out


def run(batch, schedule, conds, cancel=None, poison=None, voice_key=None):
    """Drive the batch like the T3 worker: schedule = [(tick, rid, text, params)] admitted between ticks.

    cancel / poison: {rid: tick} to cancel the request, or to put a NaN in its cache, before that tick.
    Returns ({rid: tokens}, {rid: "length"/"stop"/"error: ..."}, {rid: [logits per draw]}).
    """
    cancel, poison = dict(cancel or {}), dict(poison or {})
    tokens, ends, logits = {}, {}, {}
    pending = sorted(schedule, key=lambda s: s[0])
    real_draw = batch._draw

    def draw(first, count, lg):  # record each request's logits as the tick sees them
        for i in range(count):
            logits.setdefault(batch.slots[first + i].rid, []).append(lg[i].clone())
        return real_draw(first, count, lg)

    batch._draw = draw
    t = 0
    try:
        while pending or batch.active:
            for rid, at in list(cancel.items()):
                if at == t:
                    assert batch.cancel(rid)
                    ends[rid] = "cancelled"
            for rid, at in list(poison.items()):
                if at == t:
                    first = batch.slot_of(rid) * batch.rows
                    for k in batch.cache.k:
                        k[first:first + batch.rows, :, 0] = float("nan")
            now = [s for s in pending if s[0] <= t]
            pending = [s for s in pending if s[0] > t]
            events = batch.admit([admission(batch, rid, text, conds, p, voice_key) for _, rid, text, p in now]) if now else []
            events += batch.tick() if batch.active else []
            for e in events:
                tokens.setdefault(e.rid, [])
                if e.token is not None:
                    tokens[e.rid].append(e.token)
                if e.finish or e.error:
                    ends[e.rid] = e.finish or f"error: {e.error}"
            t += 1
    finally:
        batch._draw = real_draw
    return tokens, ends, logits


@pytest.fixture()
def batch8(tiny_model, tiny_cfg):
    return new_t3_batch(tiny_model, tiny_cfg, max_slots=8, max_len=160)


def solo(batch, conds, req):
    rid, text, p = req
    return run(batch, [(0, rid, text, p)], conds)


def test_alone_equals_inside_batches_of_1_3_8(batch8, conds):
    reqs = make_requests(8)
    alone = {r[0]: solo(batch8, conds, r) for r in reqs}
    rng = random.Random(1)
    for size in (1, 3, 8):
        chosen = rng.sample(reqs, size)
        schedule = [(rng.randint(0, 4), rid, text, p) for rid, text, p in chosen]  # joining at different ticks
        tokens, ends, logits = run(batch8, schedule, conds)
        for rid, text, p in chosen:
            assert tokens[rid] == alone[rid][0][rid], (size, rid)
            assert len(tokens[rid]) == p.max_new_tokens and ends[rid] == "length"
            # with 1-thread kernels the logits are bit-identical too (docs/t3.md, "Determinism")
            assert all(torch.equal(a, b) for a, b in zip(logits[rid], alone[rid][2][rid], strict=True)), (size, rid)
    assert batch8.active == 0 and not batch8.slots


def test_cancel_and_failure_mid_batch_leave_the_others_alone(batch8, conds):
    reqs = make_requests(5, seed=3)
    reqs = [(rid, text, replace(p, max_new_tokens=20)) for rid, text, p in reqs]
    alone = {r[0]: solo(batch8, conds, r)[0][r[0]] for r in reqs}
    schedule = [(0, *reqs[0]), (0, *reqs[1]), (2, *reqs[2]), (5, *reqs[3]), (9, *reqs[4])]
    tokens, ends, _ = run(batch8, schedule, conds, cancel={"r1": 4}, poison={"r2": 7})
    assert ends["r1"] == "cancelled" and tokens["r1"] == alone["r1"][:len(tokens["r1"])] and len(tokens["r1"]) < 20
    assert ends["r2"].startswith("error: non-finite") and tokens["r2"] == alone["r2"][:len(tokens["r2"])]
    for rid in ("r0", "r3", "r4"):  # joined before, during and after the others left
        assert tokens[rid] == alone[rid] and ends[rid] == "length"
    assert batch8.active == 0
    assert all(torch.isfinite(t).all() for t in batch8.cache.k + batch8.cache.v)  # the failed slot was scrubbed


def test_cancel_frees_the_slot_before_the_next_tick(tiny_model, tiny_cfg, conds):
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=2, max_len=160)
    reqs = make_requests(3, seed=5)
    batch.admit([admission(batch, rid, text, conds, p) for rid, text, p in reqs[:2]])
    batch.tick()
    assert batch.free_slots == 0
    assert batch.cancel("r0") and batch.free_slots == 1 and "r0" not in batch
    assert not batch.cancel("r0") and not batch.cancel("never-seen")
    rid, text, p = reqs[2]
    events = batch.admit([admission(batch, rid, text, conds, p)])  # takes r0's slot at once
    assert {e.rid for e in events} == {"r2"} and sorted(a.rid for a in batch.slots) == ["r1", "r2"]
    assert {e.rid for e in batch.tick()} <= {"r1", "r2"}


def test_row_buckets_pad_without_changing_tokens(tiny_model, tiny_cfg, conds):
    plain = new_t3_batch(tiny_model, tiny_cfg, max_slots=4, max_len=160)
    bucketed = new_t3_batch(tiny_model, tiny_cfg, max_slots=4, max_len=160, row_buckets=(4, 8))
    schedule = [(i, *r) for i, r in enumerate(make_requests(4, seed=9))]
    assert run(plain, schedule, conds)[0] == run(bucketed, schedule, conds)[0]
    with pytest.raises(ValueError, match="row_buckets"):
        new_t3_batch(tiny_model, tiny_cfg, max_slots=4, max_len=160, row_buckets=(4,))


@pytest.mark.parametrize("voice", ["default", "other"])
@pytest.mark.parametrize("exaggeration", [0.5, 1.3])
def test_cached_prefix_admission_equals_full_prefill(tiny_model, tiny_cfg, conds, voice, exaggeration):
    voices = VoiceTable({"default": conds, "other": other_voice(conds)}, tiny_cfg)
    key, vc = voices.resolve(voice)
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=2, max_len=200)
    text = [40, 41, 2, 50, 51, 52, 9, 300]
    p = SamplingParams(seed=1, exaggeration=exaggeration, max_new_tokens=5)
    for attempt in range(2):  # a miss (computes the prefix), then a hit (copies it)
        batch.admit([admission(batch, f"a{attempt}", text, vc, p, key)])
        cached = batch.logits[0].clone()
        batch.cancel(f"a{attempt}")
        assert batch.prefixes.misses == 1 and batch.prefixes.hits == attempt
        with torch.no_grad():  # the uncached reference: conditioning + text in one causal prefill
            emotion = torch.full((1, 1, 1), exaggeration)
            cond = tiny_model.conditioning(vc.speaker_emb, vc.cond_prompt_speech_tokens, emotion)
            x = tiny_model.prefill_embeds(cond, tiny_model.pad_text(torch.tensor(text)))
            n = x.shape[1]
            k = [torch.empty(2, tiny_cfg.num_kv_heads, n, tiny_cfg.head_dim) for _ in range(tiny_cfg.num_layers)]
            v = [torch.empty_like(t) for t in k]
            h = tiny_model.tfmr.prefill(x, batch.model.cos[:n], batch.model.sin[:n], k, v)
            full = tiny_model.speech_logits(h[:, -1])  # [2, V]
        assert rel_l2(cached, full) <= tolerance("t3_prefill", "last_logits")


def test_prefix_cache_is_a_bounded_lru(tiny_model, tiny_cfg, conds):
    batch = new_t3_batch(tiny_model, tiny_cfg, max_slots=1, max_len=160, prefix_cache_size=2)
    voices = VoiceTable({"default": conds, "other": other_voice(conds)}, tiny_cfg)
    text = [40, 41, 2]

    def use(voice, exaggeration):
        key, vc = voices.resolve(voice)
        batch.admit([admission(batch, "x", text, vc, SamplingParams(seed=1, exaggeration=exaggeration), key)])
        batch.cancel("x")
        return (key, exaggeration)

    a, b = use("default", 0.5), use("other", 0.5)
    assert use("default", 0.5) == a and batch.prefixes.hits == 1  # a is now the most recent
    c = use("default", 0.9)
    assert len(batch.prefixes) == 2 and a in batch.prefixes and c in batch.prefixes and b not in batch.prefixes
    use("other", 0.5)
    assert batch.prefixes.misses == 4 and len(batch.prefixes) == 2


def test_voice_table_resolves_and_names_unknown_voices(tiny_cfg, conds):
    voices = VoiceTable.default_only(conds, tiny_cfg)
    assert voices.resolve(None) == voices.resolve("default") and voices.resolve(None)[1] is conds
    with pytest.raises(ValueError, match="unknown voice 'alice'"):
        voices.resolve("alice")
    table = VoiceTable({"default": conds, "other": other_voice(conds)})
    assert table.resolve("other")[0] != table.resolve(None)[0]  # distinct voices, distinct prefix keys
