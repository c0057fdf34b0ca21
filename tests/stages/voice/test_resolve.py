"""A stage's voice resolver: its part of each stored voice, in a bounded LRU keyed by content hash."""
from __future__ import annotations

import os

import pytest
import torch

from pipeline.voices import VoiceFiles, VoiceLibrary
from stages.cfm.config import CFMConfig
from stages.cfm.voices import store_voices as cfm_voices
from stages.t3.config import T3Config
from stages.t3.conds import builtin_t3_conditionals
from stages.cfm.conds import builtin_flow_conditionals
from stages.t3.voices import store_voices as t3_voices
from stages.voice.store import VoiceStoreError

from .test_store import make_voice

T3_CFG, CFM_CFG = T3Config.from_name("tiny"), CFMConfig.from_name("tiny")


@pytest.fixture
def library(tmp_path):
    lib = VoiceLibrary(tmp_path / "voices")
    for i in range(4):
        lib.add(f"v{i}", make_voice(seed=i), {})
    return lib


def test_the_lru_holds_at_most_its_size_and_reloads_what_it_evicted(library):
    t3 = t3_voices(builtin_t3_conditionals(T3_CFG), T3_CFG, library.root, size=2)
    keys = [t3.resolve(f"v{i}")[0] for i in range(3)]
    assert len(t3) == 2 and t3.loads == 3 and list(t3.entries) == keys[1:]  # v0, the least recently used, went
    key, conds = t3.resolve("v2")  # a hit reads only the manifest
    assert t3.loads == 3 and t3.hits == 1 and key == keys[2]
    assert torch.equal(conds.speaker_emb, make_voice(seed=2).speaker_emb)  # T3's part only: speaker emb, tokens, emotion
    t3.resolve("v0")
    assert t3.loads == 4 and len(t3) == 2 and list(t3.entries) == [keys[2], keys[0]]
    default_key, default = t3.resolve(None)
    assert t3.resolve("default") == (default_key, default) and len(t3) == 2  # the checkpoint's voice is not cached


def test_equal_voices_share_an_entry_and_a_re_recorded_name_is_loaded_afresh(library):
    flow = cfm_voices(builtin_flow_conditionals(CFM_CFG), CFM_CFG, "cpu", library.root, size=4)
    k0, c0 = flow.resolve("v0")
    library.add("same", make_voice(seed=0), {})
    assert flow.resolve("same")[0] == k0 and flow.loads == 1  # same tensors, other name: one entry
    library.add("v0", make_voice(seed=9), {}, force=True)  # `voice add v0 other.wav --force`
    k1, c1 = flow.resolve("v0")
    assert k1 != k0 and flow.loads == 2 and torch.equal(c1.embedding, make_voice(seed=9).embedding)
    assert c1.prompt_feat.shape == (1, 2 * c1.prompt_token.size(1), 80)  # aligned to 2 frames per token


def test_unknown_removed_and_damaged_voices_name_the_voice(library, tmp_path):
    t3 = t3_voices(builtin_t3_conditionals(T3_CFG), T3_CFG, library.root)
    with pytest.raises(VoiceStoreError, match=r"unknown voice 'carol' in .* \(known: default, v0, v1, v2, v3\)"):
        t3.resolve("carol")
    t3.resolve("v1")
    library.remove("v1")  # removed while cached: the manifest is gone, so is the voice
    with pytest.raises(VoiceStoreError, match="unknown voice 'v1'"):
        t3.resolve("v1")
    (library.root / "v2" / "voice.safetensors").write_bytes(b"garbage")
    with pytest.raises(VoiceStoreError, match="voice 'v2': unreadable"):
        t3.resolve("v2")
    with pytest.raises(VoiceStoreError, match="unknown voice 'v0': this stage has no voices folder"):
        t3_voices(builtin_t3_conditionals(T3_CFG), T3_CFG, None).resolve("v0")
    wrong = VoiceLibrary(tmp_path / "wrong")
    bad = make_voice(seed=1)
    wrong.add("wide", bad.__class__(**{**bad.__dict__, "speaker_emb": torch.zeros(1, 64)}), {})
    with pytest.raises(VoiceStoreError, match="voice 'wide'"):  # made for another model: refused, named
        t3_voices(builtin_t3_conditionals(T3_CFG), T3_CFG, wrong.root).resolve("wide")


def test_file_names_are_reserved_for_on_the_fly_voices(library):
    with pytest.raises(VoiceStoreError, match="names starting with 'file-' are reserved"):
        library.check_new("file-abc")


def test_the_file_cache_is_bounded(tmp_path):
    from pipeline.models import ModelSpec

    files = VoiceFiles(ModelSpec(), tmp_path / "voices", max_entries=2)
    for i, used in enumerate((300, 100, 200)):  # last used: file-1 first, file-0 most recently
        info = files.library.add(f"file-{i}", make_voice(seed=i), {})
        os.utime(info.folder, (used, used))
    files._prune(keep="file-2")
    assert files.library.store.names() == ["file-0", "file-2"]
