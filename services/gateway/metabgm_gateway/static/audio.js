// The audio engine: one looping clip at a time, switched on a bar line with an equal-power fade.
//
// Rules:
// - A clip loops on its own loop points (AudioBufferSourceNode loop) until the next is ready,
//   so the music never stops while the pipeline works.
// - A switch lands on a bar line of the *current* clip's own timeline (bpm, beats_per_bar,
//   loop points), at least LEAD_S ahead so the scheduling is exact in context time.
// - Stems, when a clip has them, start together and are mixed by intensity; else the full mix.
// - The newest clip wins: a clip still waiting for its bar line is dropped for a newer one.

const LEAD_S = 0.1;

export function barSeconds(clip) {
  return (60 / clip.bpm) * clip.beats_per_bar;
}

export function fadeSeconds(transition, clip) {
  if (transition === "cut") return 0.05;
  if (transition === "continue") return 2 * barSeconds(clip);
  return barSeconds(clip);
}

// Where a clip started `elapsed` seconds ago is now, in its own timeline (with looping).
export function clipPosition(clip, elapsed) {
  const start = clip.loop_start_s;
  const end = clip.loop_end_s;
  if (elapsed < end || end <= start) return elapsed;
  return start + ((elapsed - start) % (end - start));
}

// Seconds from now to the next bar line at least `lead` away; the loop end counts as one.
export function nextBarIn(clip, elapsed, lead = LEAD_S) {
  const bar = barSeconds(clip);
  const pos = clipPosition(clip, elapsed);
  const next = Math.ceil((pos + lead) / bar - 1e-9) * bar;
  if (next < clip.loop_end_s) return next - pos;
  const toSeam = clip.loop_end_s - pos;
  if (toSeam >= lead) return toSeam;
  return toSeam + nextBarIn(clip, clip.loop_start_s, lead - toSeam);
}

function ramp(x, from, width = 0.1) {
  return Math.min(1, Math.max(0, (x - from) / width));
}

// Pads always; melody from ~0.3, rhythm from ~0.6, each faded in over 0.1 of intensity.
export function stemGains(intensity) {
  return { pads: 1, melody: ramp(intensity, 0.25), rhythm: ramp(intensity, 0.55), mix: 1 };
}

function curve(up, n = 64) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const x = i / (n - 1);
    out[i] = up ? Math.sin((x * Math.PI) / 2) : Math.cos((x * Math.PI) / 2);
  }
  return out;
}

export class Engine {
  constructor({ fetchClip, onStart }) {
    this.fetchClip = fetchClip; // url -> ArrayBuffer
    this.onStart = onStart; // (voice) when a clip becomes the current one
    this.ctx = null;
    this.master = null;
    this.current = null;
    this.pending = null;
    this.timers = [];
    this.switches = [];
    this.intensityCap = 1;
    this.volume = 0.8;
    this.muted = false;
  }

  async unlock() {
    if (!this.ctx) {
      this.ctx = new AudioContext();
      this.master = this.ctx.createGain();
      this.master.connect(this.ctx.destination);
      this.applyVolume();
    }
    await this.ctx.resume();
  }

  get running() {
    return this.ctx !== null && this.ctx.state === "running";
  }

  applyVolume() {
    if (!this.master) return;
    const target = this.muted ? 0 : this.volume;
    this.master.gain.setTargetAtTime(target, this.ctx.currentTime, 0.02);
  }

  setVolume(volume, muted) {
    this.volume = volume;
    this.muted = muted;
    this.applyVolume();
  }

  setIntensityCap(cap) {
    this.intensityCap = cap;
    for (const voice of [this.current, this.pending]) if (voice) this.mixStems(voice);
  }

  intensity(event) {
    const value = Number(event.description?.intensity ?? 0.5);
    return Math.min(Number.isFinite(value) ? value : 0.5, this.intensityCap);
  }

  mixStems(voice) {
    const gains = stemGains(this.intensity(voice.event));
    for (const [name, node] of Object.entries(voice.gains)) {
      node.gain.setTargetAtTime(gains[name] ?? 1, this.ctx.currentTime, 0.05);
    }
  }

  // Fetch and decode a clip's stems (or its full mix) into a voice ready to start.
  async load(event) {
    const stems = Object.entries(event.clip.stems || {});
    const parts = stems.length ? stems : [["mix", event.clip.url]];
    const decoded = await Promise.all(
      parts.map(async ([name, url]) => [name, await this.ctx.decodeAudioData(await this.fetchClip(url))]),
    );
    return { event, buffers: Object.fromEntries(decoded), gains: {}, sources: [], out: null, startedAt: null };
  }

  start(voice, when, fade) {
    const clip = voice.event.clip;
    voice.out = this.ctx.createGain();
    voice.out.connect(this.master);
    const gains = stemGains(this.intensity(voice.event));
    for (const [name, buffer] of Object.entries(voice.buffers)) {
      const src = this.ctx.createBufferSource();
      src.buffer = buffer;
      src.loop = true;
      src.loopStart = Math.min(clip.loop_start_s, buffer.duration);
      src.loopEnd = Math.min(clip.loop_end_s, buffer.duration);
      const gain = this.ctx.createGain();
      gain.gain.value = gains[name] ?? 1;
      src.connect(gain).connect(voice.out);
      src.start(when);
      voice.sources.push(src);
      voice.gains[name] = gain;
    }
    if (fade > 0) voice.out.gain.setValueCurveAtTime(curve(true), when, fade);
    voice.startedAt = when;
  }

  stop(voice, when = 0) {
    for (const src of voice.sources) src.stop(when);
    const ms = Math.max(0, (when - this.ctx.currentTime) * 1000) + 50;
    setTimeout(() => voice.out?.disconnect(), ms);
  }

  later(atCtxTime, fn) {
    const ms = Math.max(0, (atCtxTime - this.ctx.currentTime) * 1000);
    this.timers.push(setTimeout(fn, ms));
  }

  // Drop a switch that has not happened yet: the newest clip wins.
  cancelPending() {
    if (!this.pending) return;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    this.stop(this.pending);
    this.pending = null;
    if (this.current?.out) {
      const gain = this.current.out.gain;
      gain.cancelScheduledValues(0);
      gain.setValueAtTime(1, this.ctx.currentTime);
    }
  }

  // Play `voice` now if nothing plays, else from the current clip's next bar line.
  play(voice) {
    this.cancelPending();
    const now = this.ctx.currentTime;
    const cur = this.current;
    if (!cur) {
      this.start(voice, now + 0.05, 0.01);
      this.current = voice;
      this.switches.push({ from: null, to: voice.event.job_id, at: voice.startedAt, fade: 0 });
      this.later(voice.startedAt, () => this.onStart(voice));
      return voice.startedAt;
    }
    const at = now + nextBarIn(cur.event.clip, now - cur.startedAt);
    const fade = fadeSeconds(voice.event.transition, cur.event.clip);
    this.start(voice, at, fade);
    cur.out.gain.setValueCurveAtTime(curve(false), at, fade);
    this.pending = voice;
    this.later(at, () => {
      this.pending = null;
      this.timers = [];
      this.current = voice;
      this.switches.push({ from: cur.event.job_id, to: voice.event.job_id, at, fade });
      this.stop(cur, at + fade + 0.02);
      this.onStart(voice);
    });
    return at;
  }

  // Seconds into the current clip's timeline, for the page and the tests.
  position() {
    if (!this.current || !this.ctx) return null;
    return clipPosition(this.current.event.clip, Math.max(0, this.ctx.currentTime - this.current.startedAt));
  }
}
