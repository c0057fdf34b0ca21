"""The `say` command's machinery: reading the input, planning it, running it (pipelined), writing the audio, feedback.

Input: TEXT arguments (one utterance), `--text-file` (one utterance per line, read and
planned before anything starts, so bad input fails first), or stdin, read line by line
*as it arrives* (a line is synthesized while the next is still being typed). Every
utterance is planned here (`pipeline/text/`: bad input fails first, and the progress bar
knows its segments); lines go through one `longform.Runner`, pipelined and written in input
order with `--sentence-silence` between them. On a pipeline (local or `--connect`) each
line is ONE long-form request that the coordinator segments (one request id, its segments
pipelined inside, `--sentence-silence` between them); with `--sequential` the Runner runs
the segments of a line itself, one after another, with the same seeds and pauses: the same audio.

Feedback goes to stderr: "loading ... ready in N s", then per utterance its time to first
audio and RTF; a tqdm progress bar over the segments when stderr is a terminal and there
is more than one segment. Stdout carries audio only.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

from pipeline.audio_out import AudioWriter, OutputSpec, resolve_output
from pipeline.longform import Audio, Finished, Runner, Silence, plan_units, utterance_unit
from pipeline.text.plan import SAMPLE_RATE, make_plan, pause_samples

Log = Callable[[str], None]


class SayError(Exception):
    """Ends `say` with this message on stderr and a non-zero exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class SayOptions:
    texts: tuple[str, ...] = ()
    text_file: str | None = None
    fmt: str | None = None
    output_file: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sentence_silence: float = 0.2
    mode: str = "local"  # local | sequential | remote
    config: Any = None  # pipeline.launcher.PipelineConfig (local, sequential)
    model: Any = None  # pipeline.models.ModelSpec: whose tokenizer and budget segment the text
    connect: str | None = None  # remote: the server's request and publish endpoints
    pub: str | None = None
    window: int = 4  # requests in flight (--max-inflight)
    quiet: bool = False
    stdin: BinaryIO | None = None
    stdout: BinaryIO | None = None
    voice_file: str | None = None  # --voice-file: made into a voice here, before anything starts
    voices_dir: str | None = None  # the voice store (remote: the server's, which must be readable here)


# --- input ---------------------------------------------------------------------------------
def read_file_lines(path: str) -> list[str]:
    raw = open(path, "rb").read()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SayError(f"{path} is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    return [line.strip() for line in content.splitlines() if line.strip()]


def read_stream_lines(stream: BinaryIO, on_line: Callable[[str], None], on_end: Callable[[BaseException | None], None]) -> None:
    """Hand each non-empty line over as soon as it is complete (readline returns per line on a pipe or FIFO)."""
    n = 0
    try:
        for raw in iter(stream.readline, b""):
            n += 1
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise SayError(f"input line {n} is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
            if line:
                on_line(line)
    except BaseException as e:
        on_end(e)
        return
    on_end(None)


# --- feedback ------------------------------------------------------------------------------
class Feedback:
    """Per-utterance lines and a progress bar on stderr (the bar only on a terminal)."""

    def __init__(self, log: Log, quiet: bool):
        self.log, self.quiet = log, quiet
        self.bar = None
        self.total = 0
        self.utterances: dict[int, dict] = {}
        self.input_done = False

    def planned(self, n_segments: int) -> None:
        self.total += n_segments
        if self.quiet:
            return
        if self.bar is None and self.total > 1:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="seg", file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
        elif self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def message(self, msg: str) -> None:
        if self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(msg, file=sys.stderr)
        else:
            self.log(msg)

    def item(self, item, utterances_known: int | None) -> None:
        u = self.utterances.setdefault(item.unit.utterance, {"samples": 0, "chars": 0, "segments": 0, "submit": None, "first": None})
        if isinstance(item, (Audio, Silence)):
            u["samples"] += len(item.pcm) if isinstance(item, Audio) else (item.samples if item.unit.index else 0)
            return
        u["chars"] += len(item.unit.text)
        u["segments"] += item.unit.segments
        u["submit"] = item.submit_t if u["submit"] is None else u["submit"]
        if u["first"] is None and item.first_t is not None:
            u["first"] = item.first_t
        if self.bar is not None:
            self.bar.update(item.unit.segments)
        if item.unit.last:
            del self.utterances[item.unit.utterance]
            took = item.end_t - u["submit"]
            audio_s = u["samples"] / SAMPLE_RATE
            first = f"{u['first'] - u['submit']:.2f} s" if u["first"] is not None else "none"
            of = f"/{utterances_known}" if utterances_known else ""
            self.message(f"[{item.unit.utterance + 1}{of}] {u['chars']} chars in {u['segments']} segment(s): "
                         f"first audio after {first}, {audio_s:.2f} s of audio in {took:.2f} s "
                         f"(RTF {took / max(audio_s, 1e-9):.2f})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- backends ------------------------------------------------------------------------------
@contextlib.contextmanager
def open_backend(o: SayOptions, log: Log) -> Iterator[Any]:
    from pipeline.longform import EngineBackend, PipelineBackend, RemoteBackend

    if o.mode == "remote":
        if not o.quiet:
            log(f"using the server at {o.connect}")
        yield RemoteBackend(o.connect, o.pub)
        return
    from pipeline.launcher import PipelineStartError
    from stages.common.weights import CheckpointError

    t0 = time.perf_counter()
    if not o.quiet:
        log(f"loading {o.config.model.describe()} ({'one process' if o.mode == 'sequential' else 'three stage processes'}) ...")
    try:
        if o.mode == "sequential":
            import torch

            from pipeline.models import warn_if_builtin
            from pipeline.sequential import Engine

            warn_if_builtin(o.config.model)
            torch.set_num_threads(o.config.stage_threads("cfm"))  # as the stage processes: the same arithmetic, the same audio
            engine = Engine(o.config.model, o.config.schedule, voices_dir=o.config.voices_root())
            backend, closer = EngineBackend(engine), contextlib.nullcontext()
        else:
            from pipeline.api import Pipeline

            closer = Pipeline(o.config)
            backend = PipelineBackend(closer.__enter__())
    except (ValueError, CheckpointError, PipelineStartError) as e:
        raise SayError(str(e)) from None
    try:
        if not o.quiet:
            log(f"ready in {time.perf_counter() - t0:.1f} s")
        yield backend
    finally:
        closer.__exit__(None, None, None)


# --- the command ---------------------------------------------------------------------------
def _model_kind(spec) -> str | None:
    """The model family whose parameters apply (None = chatterbox); an undetectable checkpoint fails later, named."""
    try:
        return spec.kind if spec is not None else None
    except Exception:
        return None


def run_say(o: SayOptions, log: Log) -> None:
    """Validate everything that can be validated, then synthesize and write; SayError on failure."""
    from stages.common.params import resolve_params
    from pipeline.text.budget import for_model
    from stages.common.weights import CheckpointError

    if o.texts and o.text_file:
        raise SayError("give TEXT arguments or --text-file, not both")
    try:
        out: OutputSpec = resolve_output(o.fmt, o.output_file, o.stdout)
        pause = pause_samples(o.sentence_silence)
        resolve_params(o.params, model=_model_kind(o.model))  # bad values fail before anything starts
        if o.config is not None:
            o.config.model.check()
        resolve_voice(o, log)
        budget, count = for_model(o.model)
    except (ValueError, CheckpointError) as e:
        raise SayError(str(e)) from None
    feedback = Feedback(log, o.quiet)
    planned = [0]  # utterances planned so far

    def plan(text: str) -> list:
        plan = make_plan(text, o.params, budget, count, pause)
        pause_first = pause if planned[0] else 0
        if o.mode == "sequential":  # one process: the Runner runs the segments itself
            units = plan_units(plan, planned[0], pause_first)
        else:  # a pipeline: the coordinator runs the whole line as one request
            units = [utterance_unit(plan, text, planned[0], pause_first)]
        planned[0] += 1
        feedback.planned(sum(u.segments for u in units))
        return units

    known = None
    if o.texts or o.text_file:
        lines = [" ".join(o.texts)] if o.texts else read_file_lines(o.text_file)
        if not lines:
            raise SayError("no text given (pass TEXT, --text-file, or lines on stdin)")
        try:
            known = [plan(t) for t in lines]
        except ValueError as e:
            raise SayError(str(e)) from None
    writer = AudioWriter(out, SAMPLE_RATE, stream=o.stdout)
    if not o.quiet:
        log(f"audio: {SAMPLE_RATE} Hz mono, {out.describe()}")
    ok = False
    try:
        with open_backend(o, log) as backend:
            runner = Runner(backend, o.window)
            if known is not None:
                for units in known:
                    for u in units:
                        runner.add(u)
                runner.close_input()
                feedback.input_done = True
            else:
                _start_stdin_reader(o.stdin or sys.stdin.buffer, runner, plan, feedback)
            _consume(runner, writer, feedback, planned)
        if planned[0] == 0:
            raise SayError("no text given (pass TEXT, --text-file, or lines on stdin)")
        ok = True
    except SayError:
        raise
    except ValueError as e:
        raise SayError(str(e)) from None
    except Exception as e:
        from pipeline.client import RemoteError
        from pipeline.coordinator import RequestError

        if isinstance(e, (RequestError, RemoteError)):
            raise SayError(str(e)) from None
        raise
    finally:
        feedback.close()
        writer.close() if ok else writer.abort()


def resolve_voice(o: SayOptions, log: Log) -> None:
    """--voice-file -> a voice computed here (the front end, before any stage starts) and named in o.params;
    --voice -> checked against the store. Errors (ValueError, CheckpointError) name the file or the voice."""
    from pathlib import Path

    from pipeline.voices import VoiceFiles, check_voice_name, default_voices_dir

    root = Path(o.voices_dir) if o.voices_dir else default_voices_dir()
    if o.voice_file is not None:
        if o.params.get("voice") is not None:
            raise ValueError("give --voice or --voice-file, not both")
        t0 = time.perf_counter()
        files = VoiceFiles(o.model, root)
        o.params["voice"], notices = files.voice_for(o.voice_file)
        for notice in notices:
            log(f"notice: {notice}")
        if not o.quiet:
            how = f"computed in {time.perf_counter() - t0:.2f} s" if files.computed else "found in the cache"
            log(f"voice of {o.voice_file}: {o.params['voice']} ({how}, {root})")
    if o.mode != "remote":  # a server checks the name against its own store
        check_voice_name(root, o.params.get("voice"), _model_kind(o.model))


def _start_stdin_reader(stream: BinaryIO, runner: Runner, plan, feedback: Feedback) -> None:
    def on_line(line: str) -> None:
        for u in plan(line):
            runner.add(u)

    def on_end(error: BaseException | None) -> None:
        feedback.input_done = True
        runner.close_input(error)

    threading.Thread(target=read_stream_lines, args=(stream, on_line, on_end), name="tts-stdin", daemon=True).start()


def _consume(runner: Runner, writer: AudioWriter, feedback: Feedback, planned: list) -> None:
    for item in runner.results():
        if isinstance(item, Audio):
            writer.write(item.pcm)
        elif isinstance(item, Silence):
            writer.silence(item.samples)
        feedback.item(item, planned[0] if feedback.input_done else None)
