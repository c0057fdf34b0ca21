"""Voice cloning: a reference recording -> the conditionals of T3 and the flow, and the stored voices.

Model code only (no sockets); run in the process that owns a request's front end, never in a
stage's decode loop. Modules:

* `audio`: read and check a recording (soundfile) -> mono float32.
* `resample`: librosa's soxr_hq and torchaudio's sinc resampling, reproduced exactly.
* `voice_encoder`, `s3_tokenizer`, `campplus` (+ `fbank`, `filters`): the three models.
* `conditioning`: the reference's prepare_conditionals -> `conds.VoiceConditionals`.
* `checkpoint`: strict loading and the built-in random weights; `config`: sizes and presets.
* `store`: the voice store's file format and its read side (what the stages load).
"""
