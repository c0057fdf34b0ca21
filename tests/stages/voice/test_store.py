"""The voice store: safetensors + JSON, per-stage part loading, content hashes, atomic add/replace/remove."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from pipeline.voices import VoiceLibrary
from stages.cfm.config import CFMConfig
from stages.t3.config import T3Config
from stages.voice.conds import VoiceConditionals
from stages.voice.store import TENSORS_FILE, VoiceStore, VoiceStoreError, check_name, voice_hashes

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


def make_voice(seed: int = 0, frames: int = 349, exaggeration: float = 0.7) -> VoiceConditionals:
    """A voice with the shapes of a real one (odd mel length included), values from `seed`."""
    g = torch.Generator().manual_seed(seed)
    spk = torch.rand(1, 256, generator=g)
    return VoiceConditionals(
        speaker_emb=spk / spk.norm(), cond_prompt_speech_tokens=torch.randint(0, 6561, (1, 150), generator=g),
        emotion_adv=exaggeration * torch.ones(1, 1, 1), prompt_token=torch.randint(0, 6561, (1, frames // 2), generator=g),
        prompt_token_len=torch.tensor([frames // 2]), prompt_feat=torch.randn(1, frames, 80, generator=g) - 5,
        embedding=torch.randn(1, 192, generator=g))


@pytest.fixture
def library(tmp_path):
    return VoiceLibrary(tmp_path / "voices")


def test_a_stored_voice_reads_back_bit_identical(library):
    voice = make_voice()
    info = library.add("alice", voice, {"source": {"file": "a.wav"}})
    back = library.store.load("alice")
    for k, v in voice.tensors().items():
        t = back.tensors()[k]
        assert t.dtype == v.dtype and t.shape == v.shape and torch.equal(t, v), k
    assert info.key == voice_hashes(voice)["voice"] and info.exaggeration == 0.7
    manifest = json.loads((library.root / "alice" / "voice.json").read_text())
    assert manifest["format"] == "chatterbox-voice" and manifest["source"]["file"] == "a.wav"
    assert manifest["tensors"]["gen.prompt_feat"] == {"dtype": "float32", "shape": [1, 349, 80]}


def test_a_new_process_reads_the_same_bytes(library):
    voice = make_voice(3)
    library.add("bob", voice, {})
    code = ("import sys; from stages.voice.store import VoiceStore, content_hash, ALL_KEYS; "
            "v = VoiceStore(sys.argv[1]).load('bob'); print(content_hash(v.tensors(), ALL_KEYS))")
    out = subprocess.run([sys.executable, "-c", code, str(library.root)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == voice_hashes(voice)["voice"]  # sha256 over every tensor's bytes


def test_each_stage_loads_only_its_part(library):
    voice = make_voice(1)
    library.add("carol", voice, {})
    t3, t3_key = library.store.load_t3("carol", T3Config.from_name("tiny"))
    assert torch.equal(t3.speaker_emb, voice.speaker_emb) and torch.equal(t3.emotion_adv, voice.emotion_adv)
    assert torch.equal(t3.cond_prompt_speech_tokens, voice.cond_prompt_speech_tokens)
    flow, cfm_key = library.store.load_cfm("carol", CFMConfig.from_name("tiny"))
    assert flow.prompt_token.shape == (1, 174) and flow.prompt_feat.shape == (1, 348, 80)  # 2 frames per token
    assert torch.equal(flow.prompt_feat, voice.prompt_feat[:, :348]) and torch.equal(flow.embedding, voice.embedding)
    hashes = voice_hashes(voice)
    assert (t3_key, cfm_key) == (hashes["t3"], hashes["cfm"]) and len({t3_key, cfm_key, hashes["voice"]}) == 3


def test_damage_to_one_part_fails_that_part_only(library):
    library.add("dave", make_voice(2), {})
    path = library.root / "dave" / TENSORS_FILE
    with safe_open(str(path), framework="pt") as f:
        header_len = int.from_bytes(path.read_bytes()[:8], "little")
        meta = json.loads(path.read_bytes()[8:8 + header_len])
    start = 8 + header_len + meta["gen.prompt_feat"]["data_offsets"][0]
    data = bytearray(path.read_bytes())
    data[start + 100] ^= 0x40  # flip one bit of the prompt mel
    path.write_bytes(bytes(data))
    library.store.load_t3("dave")  # T3's tensors are intact
    with pytest.raises(VoiceStoreError, match="voice 'dave': .* does not match its manifest's cfm hash"):
        library.store.load_cfm("dave")


def test_the_same_voice_has_the_same_key_under_any_name(library):
    a, b = library.add("one", make_voice(5), {}), library.add("two", make_voice(5), {})
    assert a.key == b.key and a.t3_key == b.t3_key
    assert library.add("three", make_voice(5, exaggeration=0.3), {}).t3_key != a.t3_key  # emotion is T3's
    assert library.store.info("three").cfm_key == a.cfm_key


@pytest.mark.parametrize("name,message", [
    ("default", "'default' is the model's own voice"), ("", "invalid voice name ''"), ("a/b", "invalid voice name"),
    (".hidden", "invalid voice name"), ("x" * 65, "invalid voice name"), ("héllo", "invalid voice name"),
])
def test_invalid_names(name, message):
    with pytest.raises(VoiceStoreError, match=message):
        check_name(name)


def test_unknown_voice_lists_the_known_ones(library):
    library.add("erin", make_voice(), {})
    with pytest.raises(VoiceStoreError, match=r"unknown voice 'frank' in .*voices \(known: default, erin\)"):
        library.store.load_t3("frank")


def test_a_taken_name_is_an_error_unless_forced(library):
    library.add("gina", make_voice(1), {})
    with pytest.raises(VoiceStoreError, match=r"voice .gina. already exists in .* \(use --force to replace it\)"):
        library.add("gina", make_voice(2), {})
    info = library.add("gina", make_voice(2), {}, force=True)
    assert info.key == voice_hashes(make_voice(2))["voice"] == library.store.info("gina").key
    assert sorted(p.name for p in library.root.iterdir()) == ["gina"]  # no temporary folders left


def test_remove(library):
    library.add("hank", make_voice(), {})
    library.remove("hank")
    assert library.store.names() == [] and list(library.root.iterdir()) == []
    with pytest.raises(VoiceStoreError, match="unknown voice 'hank'"):
        library.remove("hank")
    with pytest.raises(VoiceStoreError, match="'default' is the model's own voice .* cannot be removed"):
        library.remove("default")


def test_a_newer_format_is_refused(library):
    library.add("ivy", make_voice(), {})
    manifest_path = library.root / "ivy" / "voice.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(VoiceStoreError, match="format version 99 is newer"):
        VoiceStore(library.root).load_t3("ivy")


def test_a_voice_that_does_not_fit_the_model_is_refused(library):
    library.add("jay", make_voice(), {})
    with pytest.raises(VoiceStoreError, match="voice 'jay': .*do not fit the flow"):
        library.store.load_cfm("jay", CFMConfig(spk_embed_dim=128))
