"""Streaming fidelity report: streamed vs offline synthesis of the same tokens, per chunk-schedule knob.

For each setting of first-chunk size, extra lookahead, left-context window and prompt
window it reports the streamed-vs-offline log-mel distance, the waveform SNR, the seam
jump ratio (largest jump at chunk joins / largest jump inside chunks), the compute per
second of audio (re-run overhead against offline) and the compute until the first audio
chunk when every token is already there (the CFM+vocoder share of time to first audio).

Usage: python benchmarks/bench_streaming.py [--preset tiny|small|turbo-tiny|turbo-small] [--tokens 100] [--prompt-tokens N]
(Turbo presets: the meanflow decoder in its default 2 steps, the 3 silence tokens appended as its
`generate` does, a 250-token / 500-frame prompt like the released Turbo voice.)
Prints a markdown table on stdout. Random weights: fidelity figures measure the engine's
plumbing and approximations, not perceptual quality.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pipeline.models import ModelSpec  # noqa: E402
from pipeline.sequential import Engine, stream_tokens  # noqa: E402
from stages.cfm.part import cfm_noise, new_cfm_stream  # noqa: E402
from stages.common.params import parse_params  # noqa: E402
from stages.hifigan.part import vocoder_generator  # noqa: E402
from stages.cfm.conds import FlowConditionals  # noqa: E402
from stages.hifigan.fade import apply_trim_fade  # noqa: E402

SEED = 1234  # request seed of every run: same noise, same vocoder randomness, comparable rows


def realistic_prompt(engine: Engine, n_tokens: int) -> FlowConditionals:
    """A made-up voice prompt of the real voice's length (the built-in Chatterbox voice has 157 tokens)."""
    g = torch.Generator().manual_seed(99)
    base = engine.cfm.conds
    return FlowConditionals(
        prompt_token=torch.randint(0, 6561, (1, n_tokens), generator=g),
        prompt_feat=torch.rand(1, 2 * n_tokens, 80, generator=g) * 5 - 5,  # log-mel in [-5, 0]
        embedding=base.embedding,
    )


def offline(engine: Engine, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    t0 = time.perf_counter()
    speech = torch.tensor([tokens + list(engine.cfm.tail_tokens)])  # Turbo: + the 3 silence tokens
    mel = engine.cfm.flow.infer(speech, engine.cfm.conds, cfm_noise(SEED), n_timesteps=engine.schedule.n_timesteps)[0]
    wav = apply_trim_fade(engine.hift.inference(mel[None].float(), vocoder_generator(engine.hift, SEED))[0][0])
    return mel, wav, time.perf_counter() - t0


def streamed(engine: Engine, tokens: list[int], params: dict) -> dict:
    req = parse_params({"seed": SEED, **params}, model=engine.model)
    cfm = new_cfm_stream(engine.cfm, req)
    mels = [c.mel for c in cfm.push(tokens)] + [c.mel for c in cfm.finish()]
    t0 = time.perf_counter()
    first = None
    chunks = []
    for c in stream_tokens(engine, req, tokens):
        first = first if first is not None else time.perf_counter() - t0
        chunks.append(c)
    total = time.perf_counter() - t0
    return {"mel": torch.cat(mels, dim=1), "chunks": chunks, "first_s": first, "total_s": total}


def seam_ratio(chunks) -> float:
    y = torch.cat([c.pcm for c in chunks])
    jumps = (y[1:] - y[:-1]).abs()
    joins = [c.start - 1 for c in chunks[1:]]
    if not joins:
        return float("nan")
    inside = jumps.clone()
    inside[joins] = 0
    return float(jumps[joins].max() / inside.max())


def snr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    err = (ref - test).pow(2).sum()
    return float(10 * torch.log10(ref.pow(2).sum() / err)) if err > 0 else math.inf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "turbo-tiny", "turbo-small"])
    ap.add_argument("--tokens", type=int, default=100, help="speech tokens per utterance (25 = 1 s)")
    ap.add_argument("--prompt-tokens", type=int, default=None,
                    help="voice prompt length (default 157 = the built-in Chatterbox voice; Turbo 250 = its released voice)")
    ap.add_argument("--rows", choices=["all", "prompt"], default="all", help="prompt: only the prompt-window and first-chunk rows")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(ModelSpec(preset=args.preset))
    turbo = engine.model == "turbo"
    args.prompt_tokens = args.prompt_tokens or (250 if turbo else 157)
    engine.cfm.conds = realistic_prompt(engine, args.prompt_tokens)
    tokens = torch.randint(0, 6561, (args.tokens,), generator=torch.Generator().manual_seed(7)).tolist()
    audio_s = (args.tokens + len(engine.cfm.tail_tokens)) * 0.04  # Turbo: the silence tail is audio too
    ref_mel, ref_wav, off_s = offline(engine, tokens)

    rows = [("default", {})]
    if args.rows == "all":
        rows += [(f"first_chunk_tokens={v}", {"first_chunk_tokens": v}) for v in (1, 2, 8, 16, 25)]
        rows += [(f"extra_lookahead_tokens={v}", {"extra_lookahead_tokens": v}) for v in (2, 5, 10)]
        rows += [(f"left_context_tokens={v}", {"left_context_tokens": v}) for v in (0, 8, 16, "all")]
    else:
        rows += [(f"first_chunk_tokens={v}", {"first_chunk_tokens": v}) for v in (2, 8)]
    rows += [(f"prompt_tokens={v}", {"prompt_tokens": v}) for v in (("all", 150, 100, 25, 0) if turbo else ("all", 100, 20, 0))]
    if args.rows == "all":
        rows += [(f"vocoder_lookahead_frames={v}", {"vocoder_lookahead_frames": v}) for v in (4, 8)]

    streamed(engine, tokens, {})  # warm-up: the first calls pay one-off allocation costs
    print(f"Streaming fidelity, preset `{args.preset}` ({engine.model}, {engine.schedule.n_timesteps} solver steps), {args.tokens} tokens ({audio_s:.1f} s), prompt {args.prompt_tokens} tokens, "
          f"{args.threads} torch thread(s), torch {torch.__version__}, CPU. Offline synthesis: {off_s:.2f} s.\n")
    print("| setting | log-mel mean abs diff | mel rel L2 | wav SNR (dB) | seam ratio | chunks | compute / audio s | vs offline | first audio (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, params in rows:
        r = streamed(engine, tokens, params)
        wav = torch.cat([c.pcm for c in r["chunks"]])
        assert wav.numel() == ref_wav.numel() == 960 * (args.tokens + len(engine.cfm.tail_tokens))
        mad = float((r["mel"] - ref_mel).abs().mean())
        rel = float((r["mel"] - ref_mel).norm() / ref_mel.norm())
        print(f"| {name} | {mad:.4f} | {rel:.4f} | {snr_db(ref_wav, wav):.1f} | {seam_ratio(r['chunks']):.2f} | {len(r['chunks'])} | "
              f"{r['total_s'] / audio_s:.3f} | {r['total_s'] / off_s:.2f}x | {r['first_s']:.3f} |")
    print("\nDefaults: " + ", ".join(f"{k}={v}" for k, v in engine.schedule.to_dict().items()))


if __name__ == "__main__":
    main()
