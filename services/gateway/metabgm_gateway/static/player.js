// The listen page: one player's live music, what is playing and why, and what they think of it.
//
// Rules:
// - The token in the URL is the only credential: every request carries it, nothing else.
// - The socket reconnects with backoff; the server resends the current clip first, which the
//   page ignores when it already plays it (resume). A 4xxx close is final: the link is bad.
// - Audio starts on the first click (browsers require a gesture); until then events only update
//   what the page shows.
// - `window.metabgm` exposes the state for tests and for curious listeners.

import { Engine } from "./audio.js";

const token = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = `/listen/${encodeURIComponent(token)}`;
const $ = (id) => document.getElementById(id);

const state = {
  state: "connecting",
  currentJob: null,
  pendingJob: null,
  latest: null, // the newest now_playing event
  events: [],
  reported: [],
  errors: [],
  preferences: null,
  section: null, // the cue's section playing now: {index, role}
};

const engine = new Engine({
  fetchClip: async (url) => {
    const res = await fetch(`${url}?t=${encodeURIComponent(token)}`);
    if (!res.ok) throw new Error(`clip ${url}: ${res.status}`);
    return res.arrayBuffer();
  },
  onStart: (voice) => {
    state.currentJob = voice.event.job_id;
    if (state.pendingJob === voice.event.job_id) state.pendingJob = null;
    state.state = "playing";
    show(voice.event);
    status("playing");
    report(voice.event);
  },
  onSection: (voice) => {
    state.section = { index: voice.index, role: voice.clip.section?.role ?? null };
  },
});

window.metabgm = Object.assign(state, {
  engine,
  switches: engine.switches,
  sections: engine.sections,
  contextState: () => engine.ctx?.state ?? "none",
  contextTime: () => engine.ctx?.currentTime ?? 0,
  position: () => engine.position(),
});

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function show(event) {
  const d = event.description || {};
  $("narrative").textContent = event.narrative || "";
  $("caption").textContent = d.caption || "";
  $("tempo").textContent = d.tempo_bpm ? `${d.tempo_bpm} bpm` : `${Math.round(event.clip.bpm)} bpm`;
  $("key").textContent = d.key ? `${d.key} ${d.mode || ""}` : "–";
  $("instruments").textContent = (d.instruments || []).join(", ") || "–";
  $("intensity").value = Number(d.intensity ?? 0);
  $("transition").textContent = event.transition;
}

async function post(path, body) {
  const res = await fetch(`${base}/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.detail || `${res.status}`);
  return data;
}

function report(event) {
  post("playing", { job_id: event.job_id, received_at: event.received_at })
    .then((r) => state.reported.push({ job_id: event.job_id, ...r }))
    .catch((e) => state.errors.push(String(e)));
}

async function play(event) {
  if (!engine.running) return; // shown already; plays after the click
  if (event.job_id === state.currentJob || event.job_id === state.pendingJob) return;
  state.pendingJob = event.job_id;
  try {
    const voice = await engine.load(event);
    if (state.latest?.job_id !== event.job_id) return; // a newer clip arrived while loading
    engine.play(voice);
  } catch (e) {
    // The current clip keeps looping; the next event will try again.
    if (state.pendingJob === event.job_id) state.pendingJob = null;
    state.errors.push(String(e));
    status(`could not load the next clip (${e.message})`, true);
  }
}

function onEvent(msg) {
  state.events.push({ type: msg.type, job_id: msg.job_id, resumed: !!msg.resumed });
  if (state.events.length > 50) state.events.shift();
  if (msg.type === "now_playing") {
    if (state.latest?.job_id === msg.job_id) return; // a resume of what we have
    state.latest = msg;
    if (!engine.running) show(msg);
    play(msg);
  } else if (msg.type === "narrative") {
    $("narrative").textContent = msg.text;
  } else if (msg.type === "preferences") {
    applyPreferences(msg.preferences);
  }
}

let backoff = 500;
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}${base}/events`);
  ws.onopen = () => {
    backoff = 500;
    if (state.state === "connecting" || state.state === "offline") {
      state.state = engine.running && state.currentJob ? "playing" : "ready";
    }
    status(engine.running ? "connected" : "connected: press start");
  };
  ws.onmessage = (e) => onEvent(JSON.parse(e.data));
  ws.onclose = (e) => {
    if (e.code >= 4000 && e.code < 5000) {
      state.state = "refused";
      status(e.reason || "this link does not work any more", true);
      $("start").hidden = true;
      return;
    }
    state.state = engine.running && state.currentJob ? "playing" : "offline";
    status("reconnecting…");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

function words(text) {
  return text
    .split(",")
    .map((w) => w.trim().toLowerCase())
    .filter(Boolean);
}

function applyPreferences(p) {
  state.preferences = p;
  $("favour").value = p.favour.join(", ");
  $("avoid").value = p.avoid.join(", ");
  $("cap").value = p.intensity_cap;
  $("volume").value = p.volume;
  engine.setIntensityCap(p.intensity_cap);
  engine.setVolume(p.volume, engine.muted);
}

async function savePreferences(extra = {}) {
  const body = {
    favour: words($("favour").value),
    avoid: words($("avoid").value),
    intensity_cap: Number($("cap").value),
    volume: Number($("volume").value),
    ...extra,
  };
  try {
    const { preferences } = await post("preferences", body);
    applyPreferences(preferences);
    $("prefs-note").textContent = "saved";
    $("prefs-note").classList.remove("error");
  } catch (e) {
    $("prefs-note").textContent = e.message;
    $("prefs-note").classList.add("error");
  }
}

async function feedback(kind) {
  try {
    await post("feedback", { kind, job_id: state.currentJob });
    $("feedback").textContent = kind === "like" ? "glad you like it" : "noted: we'll change it up";
  } catch (e) {
    $("feedback").textContent = e.message;
  }
}

function wire() {
  $("start").addEventListener("click", async () => {
    await engine.unlock();
    $("start").hidden = true;
    state.state = "started";
    if (state.latest) play(state.latest);
    else status("waiting for music…");
  });
  let volumeTimer = null;
  $("volume").addEventListener("input", () => {
    engine.setVolume(Number($("volume").value), engine.muted);
    clearTimeout(volumeTimer);
    volumeTimer = setTimeout(() => savePreferences(), 600);
  });
  $("mute").addEventListener("click", () => {
    engine.setVolume(engine.volume, !engine.muted);
    $("mute").setAttribute("aria-pressed", String(engine.muted));
    $("mute").textContent = engine.muted ? "Unmute" : "Mute";
  });
  $("like").addEventListener("click", () => feedback("like"));
  $("skip").addEventListener("click", () => feedback("skip"));
  $("prefs").addEventListener("submit", (e) => {
    e.preventDefault();
    savePreferences();
  });
}

async function loadPreferences() {
  const res = await fetch(`${base}/preferences`);
  if (!res.ok) return;
  const data = await res.json();
  $("known").textContent = [...data.instruments, ...data.genres].join(", ");
  applyPreferences(data.preferences);
}

wire();
loadPreferences();
connect();
