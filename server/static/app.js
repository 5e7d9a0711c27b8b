// The EmoDistill page: a file through POST /predict, or the microphone through /v1/stream.
// Plain ES module, no build step. Protocol: docs/streaming.md.

const PX_PER_SECOND = 50; // the timeline's scale (its background grid marks seconds)
const FRAME_MS = 100; // audio per websocket frame
const KNOWN_LABELS = ["neutral", "happy", "angry", "sad"];
const SVG_NS = "http://www.w3.org/2000/svg";
const PLOT = { left: 30, top: 10, size: 200 }; // the plot's square in its 240 x 240 viewBox
const TICKS = 5;

const $ = (id) => document.getElementById(id);
let labels = KNOWN_LABELS;
let dimensions = null; // {names, scale} when the model answers dimensions (model.json), else null

function apiKey() {
  return $("api-key").value.trim();
}

// Browsers cannot set headers on a websocket: the key travels as a subprotocol
// (emodistill.key.<base64url of its UTF-8>) next to the protocol the server echoes,
// emodistill.v1, never in the URL (URLs end up in logs). docs/api.md, "Security".
function streamProtocols() {
  const key = apiKey();
  if (!key) return undefined;
  const bytes = new TextEncoder().encode(key);
  const b64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return ["emodistill.v1", `emodistill.key.${b64}`];
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function colour(label) {
  return KNOWN_LABELS.includes(label) ? `var(--${label})` : "var(--other)";
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function renderBars(container, probabilities) {
  const bars = document.createElement("div");
  bars.className = "bars";
  const best = Object.entries(probabilities).reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  for (const [label, p] of Object.entries(probabilities)) {
    const name = document.createElement("span");
    name.className = "name" + (label === best ? " top" : "");
    name.textContent = label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = colour(label);
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    bars.append(name, track, value);
  }
  container.replaceChildren(bars);
}

// Dimensions (arousal, valence, dominance on the model's scale) --------------------------------

function renderDimensions(container, values) {
  container.textContent = values
    ? Object.entries(values).map(([name, value]) => `${name} ${value.toFixed(2)}`).join(" · ")
    : "";
}

function uncertainBadge() {
  const badge = document.createElement("span");
  badge.className = "uncertain";
  badge.textContent = "uncertain";
  badge.title = "confidence below the server's min_confidence: the label is a guess";
  return badge;
}

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// Valence along x, arousal up y; values outside the scale (not clipped) sit on its edge.
function plotPosition(value, flip) {
  const [low, high] = dimensions.scale;
  const share = Math.min(1, Math.max(0, (value - low) / (high - low)));
  return flip ? PLOT.top + PLOT.size * (1 - share) : PLOT.left + PLOT.size * share;
}

function plottable() {
  return Boolean(dimensions && ["valence", "arousal"].every((name) => dimensions.names.includes(name)));
}

function drawAffectAxes() {
  $("affect").hidden = !plottable();
  if (!plottable()) return;
  const [low, high] = dimensions.scale;
  const bottom = PLOT.top + PLOT.size;
  const parts = [svg("rect", { class: "frame", x: PLOT.left, y: PLOT.top, width: PLOT.size, height: PLOT.size })];
  for (let i = 0; i < TICKS; i++) {
    const value = low + ((high - low) * i) / (TICKS - 1);
    const text = Number.isInteger(value) ? String(value) : value.toFixed(1);
    const x = plotPosition(value, false);
    const y = plotPosition(value, true);
    parts.push(
      svg("line", { class: "grid", x1: x, y1: PLOT.top, x2: x, y2: bottom }),
      svg("line", { class: "grid", x1: PLOT.left, y1: y, x2: PLOT.left + PLOT.size, y2: y }),
      svg("text", { class: "tick x", x, y: bottom + 11, "text-anchor": "middle" }, text),
      svg("text", { class: "tick y", x: PLOT.left - 4, y: y + 3, "text-anchor": "end" }, text),
    );
  }
  const middle = PLOT.top + PLOT.size / 2;
  parts.push(
    svg("text", { class: "axis-name", x: PLOT.left + PLOT.size / 2, y: 238, "text-anchor": "middle" }, "valence"),
    svg("text", { class: "axis-name", x: 10, y: middle, "text-anchor": "middle", transform: `rotate(-90 10 ${middle})` }, "arousal"),
  );
  $("affect-plot").replaceChildren(...parts);
}

function plotFinal(event) {
  if (!plottable() || !event.dimensions) return;
  const { valence, arousal } = event.dimensions;
  const point = svg("circle", {
    class: "point",
    cx: plotPosition(valence, false),
    cy: plotPosition(arousal, true),
    r: 5,
    fill: colour(event.label),
    "data-utterance": event.utterance,
  });
  point.append(svg("title", {}, `utterance ${event.utterance}: ${event.label}, valence ${valence.toFixed(2)}, arousal ${arousal.toFixed(2)}`));
  $("affect-plot").append(point);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.code}: ${body.error.message}` : response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const info = $("model-info");
  try {
    const response = await fetch("/v1/model", { headers: authHeaders() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const model = await response.json();
    labels = model.labels;
    dimensions = model.model?.dimensions ?? null;
    drawAffectAxes();
    const backbone = model.model?.backbone ?? "model";
    const affect = dimensions ? ` Dimensions: ${dimensions.names.join(", ")} (${dimensions.scale.join("–")}).` : "";
    const corpora = (model.model?.corpora ?? []).map((c) => c.name.toUpperCase());
    const usage = model.model?.usage === "non-commercial"
      ? ` Trained on ${corpora.join(" and ")}: for non-commercial use only.`
      : "";
    info.textContent = `Labels: ${labels.join(", ")}; ${backbone} on ${model.provider}.${affect}${usage}`;
  } catch (error) {
    info.textContent = `Model information unavailable (${error.message}).`;
  }
}

// A file ------------------------------------------------------------------------------------

async function predictFile(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const status = $("upload-status");
  const result = $("upload-result");
  if (!file) {
    setStatus(status, "Choose a file first.", true);
    return;
  }
  setStatus(status, `Sending ${file.name}…`);
  result.replaceChildren();
  const segment = $("upload-segment").checked;
  try {
    const response = await fetch(`/predict${segment ? "?segment=true" : ""}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", ...authHeaders() },
      body: file,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const [prediction] = (await response.json()).results;
    const parts = prediction.segments ?? [prediction];
    for (const part of parts) {
      const block = document.createElement("div");
      block.className = "prediction";
      const head = document.createElement("p");
      const span = part.start_s === undefined ? "" : ` (${part.start_s.toFixed(2)}–${part.end_s.toFixed(2)} s)`;
      head.innerHTML = `<strong></strong>${span}`;
      head.querySelector("strong").textContent = part.label ?? "no speech";
      if (part.uncertain) head.append(" ", uncertainBadge());
      const bars = document.createElement("div");
      if (part.probabilities) renderBars(bars, part.probabilities);
      const affect = document.createElement("p");
      affect.className = "dimensions";
      renderDimensions(affect, part.dimensions);
      block.append(head, bars, affect);
      result.append(block);
    }
    const ms = prediction.timings?.inference_ms;
    setStatus(status, `${file.name}: ${prediction.duration_s.toFixed(2)} s` + (ms ? `, inference ${ms.toFixed(0)} ms.` : "."));
  } catch (error) {
    setStatus(status, `Failed: ${error.message}`, true);
  }
}

// The microphone ----------------------------------------------------------------------------

class LiveSession {
  constructor() {
    this.status = $("live-status");
    this.pending = []; // frames captured before the socket opened
    this.spans = new Map(); // utterance index -> {item, span}
  }

  async start() {
    this.closing = false;
    $("timeline").replaceChildren();
    $("utterances").replaceChildren();
    drawAffectAxes();
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("pcm-worklet.js");
    const source = this.context.createMediaStreamSource(this.media);
    this.worklet = new AudioWorkletNode(this.context, "pcm-writer", { processorOptions: { frameMs: FRAME_MS } });
    // Keep the node in a rendered graph without playing the microphone back.
    const mute = this.context.createGain();
    mute.gain.value = 0;
    source.connect(this.worklet).connect(mute).connect(this.context.destination);

    const query = new URLSearchParams({
      sample_rate: String(this.context.sampleRate),
      encoding: "pcm_s16le",
      interim: String($("interim").checked),
      min_silence_ms: $("min-silence").value,
    });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}/v1/stream?${query}`, streamProtocols());
    this.socket.binaryType = "arraybuffer";
    this.socket.onopen = () => {
      for (const frame of this.pending) this.socket.send(frame);
      this.pending = [];
    };
    this.socket.onmessage = (message) => this.handle(JSON.parse(message.data));
    this.socket.onclose = (close) => this.closed(close);
    this.worklet.port.onmessage = ({ data }) => this.capture(data);
    setStatus(this.status, `Connecting (microphone at ${this.context.sampleRate} Hz)…`);
  }

  capture({ pcm, peak }) {
    $("level-bar").style.width = `${Math.min(100, peak * 100).toFixed(0)}%`;
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(pcm);
    else if (this.socket.readyState === WebSocket.CONNECTING) this.pending.push(pcm);
  }

  stop() {
    this.releaseAudio();
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "stop" }));
      setStatus(this.status, "Stopping: waiting for the last results…");
    }
  }

  releaseAudio() {
    this.media?.getTracks().forEach((track) => track.stop());
    this.worklet?.port.close();
    this.context?.close();
    this.media = this.context = this.worklet = null;
    $("level-bar").style.width = "0";
  }

  closed(close) {
    this.releaseAudio();
    if (close.code === 1000) setStatus(this.status, "Stopped.");
    else if (close.code === 1001 && this.closing) {
      setStatus(this.status, "The server shut down; every result above is complete. Record again to reconnect.");
    } else if (!this.status.classList.contains("error")) {
      setStatus(this.status, `Connection closed (${close.code}${close.reason ? `: ${close.reason}` : ""}).`, true);
    }
    $("record").disabled = false;
    $("stop").disabled = true;
  }

  handle(event) {
    switch (event.type) {
      case "ready":
        if (event.dimensions && !dimensions) {
          dimensions = event.dimensions; // /v1/model was not readable (an API key typed later)
          drawAffectAxes();
        }
        setStatus(this.status, `Recording: ${event.sample_rate} Hz, session ${event.session_id.slice(0, 8)}.`);
        break;
      case "speech_start":
        this.entry(event.utterance, event.start, event.time);
        break;
      case "partial":
      case "final":
        this.result(event);
        break;
      case "closing":
        // The server is shutting down: send no more audio; the last finals still arrive.
        this.closing = true;
        this.releaseAudio();
        setStatus(this.status, "The server is shutting down: receiving the last results…");
        break;
      case "error":
        setStatus(this.status, `Error ${event.code}: ${event.message}`, true);
        break;
    }
  }

  entry(utterance, start, end) {
    if (this.spans.has(utterance)) return this.spans.get(utterance);
    const item = document.createElement("li");
    item.className = "pending";
    item.dataset.utterance = utterance;
    item.innerHTML = '<div class="head"><span class="label">speech</span><span class="when"></span></div><div class="scores"></div><p class="dimensions"></p>';
    const badge = uncertainBadge();
    badge.hidden = true;
    item.querySelector(".head").append(badge);
    $("utterances").prepend(item);
    const span = document.createElement("div");
    span.className = "span pending";
    span.style.background = "var(--neutral)";
    $("timeline").append(span);
    const entry = { item, span };
    this.spans.set(utterance, entry);
    this.place(entry, start, end);
    return entry;
  }

  place({ item, span }, start, end) {
    span.style.left = `${start * PX_PER_SECOND}px`;
    span.style.width = `${Math.max(2, (end - start) * PX_PER_SECOND)}px`;
    item.querySelector(".when").textContent = `${start.toFixed(2)}–${end.toFixed(2)} s`;
    const timeline = $("timeline");
    const overflow = end * PX_PER_SECOND - timeline.clientWidth + 40;
    for (const child of timeline.children) child.style.translate = `${-Math.max(0, overflow)}px 0`;
  }

  result(event) {
    const entry = this.entry(event.utterance, event.start, event.end);
    const { item, span } = entry;
    const isFinal = event.type === "final";
    if (item.classList.contains("final")) return; // a late partial never overrides a final
    item.className = isFinal ? "final" : "pending";
    item.dataset.label = event.label;
    item.querySelector(".label").textContent = event.label;
    item.querySelector(".label").style.color = colour(event.label);
    renderBars(item.querySelector(".scores"), event.probabilities);
    renderDimensions(item.querySelector(".dimensions"), event.dimensions);
    item.querySelector(".uncertain").hidden = !event.uncertain;
    if (isFinal) plotFinal(event);
    span.className = `span ${isFinal ? "final" : "pending"}`;
    span.style.background = colour(event.label);
    span.textContent = event.label;
    this.place(entry, event.start, event.end);
  }
}

let live = null;

async function record() {
  $("record").disabled = true;
  $("stop").disabled = false;
  live = new LiveSession();
  try {
    await live.start();
  } catch (error) {
    live.releaseAudio();
    setStatus($("live-status"), `Cannot record: ${error.message}`, true);
    $("record").disabled = false;
    $("stop").disabled = true;
  }
}

$("api-key").value = localStorage.getItem("emodistill-api-key") ?? "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("emodistill-api-key", apiKey());
  loadModel();
});
$("upload-form").addEventListener("submit", predictFile);
$("record").addEventListener("click", record);
$("stop").addEventListener("click", () => live?.stop());
loadModel();
