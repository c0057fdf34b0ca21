"""CFM-stage CPU/GPU benchmark (a script, not a test): one estimator call and a full encode + 10-step solve.

Usage:  .venv/bin/python benchmarks/bench_cfm.py [--presets tiny small] [--device cpu] [--reps 3] [--out FILE.md]

Built-in random weights (timing does not depend on the values). For each preset and utterance
length (25 tokens = 1 s, 125 tokens = 5 s of audio) it times, after WARMUP untimed calls:
  * estimator: one ConditionalDecoder forward on the CFG batch of 2 over F = 2(P+N) frames;
  * flow: Flow.encode + Flow.solve (10 Euler steps = 10 estimator calls), i.e. the whole utterance;
and reports the median over --reps runs and the real-time factor (flow time / audio seconds).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.cfm import CFMConfig, NoiseSource, build_builtin_flow  # noqa: E402

TOKENS_PER_SECOND = 25  # S3 speech-token rate
UTTERANCE_TOKENS = (25, 125)  # 1 s and 5 s of audio
WARMUP = 3  # untimed calls first: allocator, oneDNN primitive creation, thread-pool start-up
PROMPT_TOKENS = {"tiny": 40, "small": 150, "chatterbox": 150}  # golden tiny prompt; real prompts are ~150-157 tokens (6 s)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, reps: int) -> tuple[float, float]:
    """(median, min) seconds over `reps` runs after WARMUP calls; min is the figure least hurt by other load."""
    for _ in range(WARMUP):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def bench_preset(name: str, device: torch.device, reps: int) -> list[dict]:
    cfg = CFMConfig.from_name(name)
    flow = build_builtin_flow(cfg).to(device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in UTTERANCE_TOKENS:
        p = PROMPT_TOKENS[name]
        tokens = torch.randint(0, cfg.vocab_size, (1, p + n), generator=gen).to(device)
        frames = cfg.mel_frames(p + n, finalize=True)
        noise = NoiseSource(0, cfg.n_mels).frames(0, frames).unsqueeze(0).to(device)
        spks = flow.embed_speaker(torch.randn(1, cfg.spk_embed_dim, generator=gen))
        cond = flow.prompt_cond(torch.randn(1, 2 * p, cfg.n_mels, generator=gen) - 3, frames)
        mu = flow.encode(tokens, True)
        x2, mu2, c2 = noise.repeat(2, 1, 1), torch.cat([mu, 0 * mu]), torch.cat([cond, 0 * cond])
        s2, m2, t2 = torch.cat([spks, 0 * spks]), torch.ones(2, 1, frames, device=device), torch.full((2,), 0.5, device=device)

        def one_estimator():
            with torch.no_grad():
                flow.estimator(x2, m2, mu2, t2, s2, c2)

        def whole_flow():
            flow.solve(flow.encode(tokens, True), spks, cond, noise, n_timesteps=cfg.n_timesteps)

        est = _time(one_estimator, device, reps)
        full = _time(whole_flow, device, reps)
        audio_s = n / TOKENS_PER_SECOND
        rows.append(dict(preset=name, prompt=p, tokens=n, frames=frames, est=est, flow=full, rtf=full[1] / audio_s))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [r for name in args.presets for r in bench_preset(name, device, args.reps)]
    lines = [
        f"# CFM stage benchmark ({device.type})",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_cfm.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, python {platform.python_version()}",
        f"Built-in random weights, fp32, median / min of {args.reps} runs after {WARMUP} warm-up calls. "
        "estimator = one ConditionalDecoder call on the CFG batch of 2 over F frames; "
        "flow = encode + 10-step Euler/CFG solve over prompt + generated frames; RTF = min flow time / audio duration.",
        "",
        "| preset | prompt tokens | speech tokens (audio) | frames F | estimator call, median / min (ms) | encode + 10-step solve, median / min (ms) | RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['prompt']} | {r['tokens']} ({r['tokens'] / TOKENS_PER_SECOND:.0f} s) | {r['frames']} "
            f"| {r['est'][0] * 1e3:.1f} / {r['est'][1] * 1e3:.1f} | {r['flow'][0] * 1e3:.1f} / {r['flow'][1] * 1e3:.1f} | {r['rtf']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
