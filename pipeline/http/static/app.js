// The demo page's player: POST /v1/audio/speech with response_format "pcm", schedule each piece of the
// body on WebAudio as it arrives, show time to first audio and the arrivals, offer the result as a WAV.
// window.ttsDemo exposes what happened (the browser test reads it).
"use strict";

const SAMPLE_RATE = 24000; // Hz, s16le mono: what the server streams
const LEAD_S = 0.05; // schedule audio this far ahead of the clock, so a buffer never starts late
const MAX_ROWS = 200; // arrivals listed on the page (all are counted)

const demo = (window.ttsDemo = {
  state: "idle", // idle | requesting | playing | done | stopped | error
  firstAudioMs: null, // Play pressed -> first samples scheduled
  samplesScheduled: 0,
  chunks: [], // {ms, bytes} per body read
  requestMs: null,
  seed: null,
  requestId: null,
  wavBytes: 0,
  contextState: null,
  errors: [], // uncaught errors and rejections (a test asserts there are none)
});
window.addEventListener("error", (e) => demo.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => demo.errors.push(String(e.reason)));

const $ = (id) => document.getElementById(id);
const NUMBER_FIELDS = ["seed", "temperature", "cfg_weight", "exaggeration", "min_p", "top_p",
  "repetition_penalty", "max_new_tokens", "first_chunk_tokens", "n_timesteps"];
const INTEGER_FIELDS = new Set(["seed", "max_new_tokens", "first_chunk_tokens", "n_timesteps"]);

let modelId = null; // the served model's id (from /v1/models): the body names it
let audio = null; // the AudioContext (made on the first Play: browsers want a user gesture)
let run = null; // the request playing now: {abort, sources, nextTime, t0, parts}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadChoices() {
  const [voices, models] = await Promise.all([
    fetch("/v1/audio/voices").then((r) => r.json()),
    fetch("/v1/models").then((r) => r.json()),
  ]);
  const m = models.data[0];
  modelId = m.id;
  // the served family's defaults (Turbo: 2 solver steps, top_p 0.95); a knob it does not have keeps the page's value
  const defaults = { ...m.sampling_defaults, ...m.schedule_defaults };
  for (const name of NUMBER_FIELDS) if (typeof defaults[name] === "number") $(name).value = defaults[name];
  for (const v of voices.voices) {
    const opt = new Option(v.aliases.length ? `${v.id} (aliases: ${v.aliases.join(", ")})` : v.id, v.id);
    $("voice").add(opt);
  }
  $("model").textContent = `Model: ${m.id} — ${m.description}.`;
}

function requestBody() {
  const body = { input: $("text").value, voice: $("voice").value, response_format: "pcm" };
  if (modelId) body.model = modelId; // unset (the server's model) when the list could not be loaded
  for (const name of NUMBER_FIELDS) {
    const raw = $(name).value.trim();
    if (raw !== "") body[name] = INTEGER_FIELDS.has(name) ? parseInt(raw, 10) : parseFloat(raw);
  }
  if ($("ignore_eos").checked) body.ignore_eos = true;
  return body;
}

function resetReadout() {
  Object.assign(demo, { firstAudioMs: null, samplesScheduled: 0, chunks: [], requestMs: null, seed: null,
    requestId: null, wavBytes: 0 });
  $("ttfa").textContent = "–";
  $("nchunks").textContent = "0";
  $("audio").textContent = "0.00 s";
  $("elapsed").textContent = "–";
  $("chunks").textContent = "";
  $("download").hidden = true;
}

function schedule(samples) {
  const buffer = audio.createBuffer(1, samples.length, SAMPLE_RATE);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
  const source = audio.createBufferSource();
  source.buffer = buffer;
  source.connect(audio.destination);
  const when = Math.max(run.nextTime, audio.currentTime + LEAD_S); // late: resume a little ahead (an underrun)
  source.start(when);
  run.nextTime = when + buffer.duration;
  run.sources.push(source);
  demo.samplesScheduled += samples.length;
  if (demo.firstAudioMs === null) {
    demo.firstAudioMs = performance.now() - run.t0;
    $("ttfa").textContent = `${demo.firstAudioMs.toFixed(0)} ms`;
  }
}

function noteArrival(bytes) {
  const ms = performance.now() - run.t0;
  demo.chunks.push({ ms, bytes });
  $("nchunks").textContent = String(demo.chunks.length);
  $("audio").textContent = `${(demo.samplesScheduled / SAMPLE_RATE).toFixed(2)} s`;
  if (demo.chunks.length <= MAX_ROWS) {
    $("chunks").textContent += `${ms.toFixed(0).padStart(7)} ms  ${String(bytes).padStart(7)} bytes\n`;
  }
}

function wavBlob(parts) {
  // 44-byte RIFF header of 16-bit mono PCM, then the samples (little-endian, as received)
  const n = parts.reduce((a, p) => a + p.length, 0);
  const view = new DataView(new ArrayBuffer(44));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, SAMPLE_RATE, true); view.setUint32(28, 2 * SAMPLE_RATE, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  return new Blob([view, ...parts], { type: "audio/wav" });
}

async function play() {
  stop("stopped");
  resetReadout();
  audio = audio || new AudioContext({ sampleRate: SAMPLE_RATE });
  await audio.resume();
  demo.contextState = audio.state;
  const controller = new AbortController();
  const current = (run = { abort: controller, sources: [], nextTime: 0, t0: performance.now(), parts: [] });
  demo.state = "requesting";
  setStatus("requesting…");
  $("play").disabled = true;
  $("stop").disabled = false;
  try {
    const resp = await fetch("/v1/audio/speech", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!resp.ok) {
      const err = (await resp.json()).error;
      throw new Error(`${resp.status}: ${err.message}`);
    }
    demo.seed = resp.headers.get("x-seed");
    demo.requestId = resp.headers.get("x-request-id");
    demo.state = "playing";
    setStatus(`playing (seed ${demo.seed})`);
    const reader = resp.body.getReader();
    let carry = null; // an odd byte left over from the previous read (a sample split across reads)
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let bytes = value;
      if (carry !== null) {
        bytes = new Uint8Array(value.length + 1);
        bytes[0] = carry;
        bytes.set(value, 1);
      }
      const whole = bytes.length - (bytes.length % 2);
      carry = whole < bytes.length ? bytes[whole] : null;
      if (whole > 0) {
        const samples = new Int16Array(bytes.slice(0, whole).buffer); // copy: aligned, little-endian as sent
        current.parts.push(samples);
        schedule(samples);
      }
      noteArrival(value.length);
    }
    demo.requestMs = performance.now() - current.t0;
    $("elapsed").textContent = `${demo.requestMs.toFixed(0)} ms`;
    const blob = wavBlob(current.parts);
    demo.wavBytes = blob.size;
    const link = $("download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.hidden = false;
    demo.state = "done";
    setStatus(`done: ${(demo.samplesScheduled / SAMPLE_RATE).toFixed(2)} s of audio`);
  } catch (e) {
    if (controller.signal.aborted) return; // Stop pressed
    demo.state = "error";
    setStatus(String(e.message || e), true);
  } finally {
    if (run === current) {
      $("play").disabled = false;
      $("stop").disabled = true;
    }
  }
}

function stop(state) {
  if (!run) return;
  run.abort.abort(); // closes the connection: the server cancels the request in every stage
  for (const s of run.sources) {
    try { s.stop(); } catch (e) { /* not started yet */ }
  }
  run = null;
  if (state) demo.state = state;
  $("play").disabled = false;
  $("stop").disabled = true;
}

$("play").addEventListener("click", () => { play(); });
$("stop").addEventListener("click", () => { stop("stopped"); setStatus("stopped"); });
loadChoices().catch((e) => setStatus(`could not load voices: ${e}`, true));
