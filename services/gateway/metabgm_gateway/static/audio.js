// The audio engine: a scene's cue played section after section, and the next scene's cue
// switched in on a musical boundary.
//
// Rules:
// - A section loops on its own loop points (AudioBufferSourceNode loop) until the next is ready,
//   so the music never stops while the pipeline works.
// - A cue's next section is fetched as soon as a section starts (`/clips/<key>.json`, retried
//   while the synth renders it) and starts exactly at the current section's end, with a short
//   equal-power splice. One that arrives late waits for the end of the current pass: a section is
//   never cut mid-phrase. After the last section the cue goes on from `loop_from`.
// - A new cue (the next scene) lands on the current section's next phrase end (a clip without
//   sections: its next bar line), at least LEAD_S ahead so the scheduling is exact in context
//   time; an urgent one (transition "cut") on the next beat. Only the newest is kept waiting.
// - Stems, when a clip has them, start together and are mixed by intensity; else the full mix.

const LEAD_S = 0.1;
const SPLICE_S = 0.03; // section to section: short enough to keep the beat, long enough not to click
const RETRY_S = [0.5, 1, 1, 2, 3]; // waiting for a section the synth is still rendering
const CLIP_URL = /^\/clips\/[0-9a-f]{8,64}(\.[a-z]+)?\.ogg$/;
const KEY = /^[0-9a-f]{8,64}$/;

export function barSeconds(clip) {
  return (60 / clip.bpm) * clip.beats_per_bar;
}

export function beatSeconds(clip) {
  return 60 / clip.bpm;
}

// Where a new cue may come in: a phrase end of a section, a bar line of a plain clip.
export function phraseSeconds(clip) {
  return barSeconds(clip) * (clip.section?.phrase_bars ?? 1);
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

// Seconds from now to the next multiple of `unit` in the clip's timeline at least `lead` away;
// the loop end counts as one.
export function nextBoundaryIn(clip, elapsed, unit, lead = LEAD_S) {
  const pos = clipPosition(clip, elapsed);
  const next = Math.ceil((pos + lead) / unit - 1e-9) * unit;
  if (next < clip.loop_end_s - 1e-9) return next - pos;
  const toSeam = clip.loop_end_s - pos;
  if (toSeam >= lead) return toSeam;
  return toSeam + nextBoundaryIn(clip, clip.loop_start_s, unit, lead - toSeam);
}

export function nextBarIn(clip, elapsed, lead = LEAD_S) {
  return nextBoundaryIn(clip, elapsed, barSeconds(clip), lead);
}

// Seconds from now to the clip's next loop end (the end of the pass playing now).
export function nextEndIn(clip, elapsed, lead = LEAD_S) {
  const pass = clip.loop_end_s - clip.loop_start_s;
  return nextBoundaryIn(clip, elapsed, Math.max(pass, clip.loop_end_s), lead);
}

// Where a new cue comes in: the next beat for a cut, else the next phrase end.
export function switchIn(transition, clip, elapsed, lead = LEAD_S) {
  const unit = transition === "cut" ? beatSeconds(clip) : phraseSeconds(clip);
  return nextBoundaryIn(clip, elapsed, unit, lead);
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

// A section's clip as the store describes it, checked before anything is fetched from it.
function sectionClip(meta) {
  const stems = Object.entries(meta.stems || {}).filter(
    ([name, url]) => ["pads", "melody", "rhythm"].includes(name) && CLIP_URL.test(url),
  );
  if (!CLIP_URL.test(meta.url) || !(meta.bpm >= 20 && meta.bpm <= 300)) throw new Error("bad section clip");
  return {
    url: meta.url,
    stems: Object.fromEntries(stems),
    duration_s: Number(meta.duration_s),
    bpm: Number(meta.bpm),
    beats_per_bar: Number(meta.beats_per_bar || 4),
    bars: Number(meta.bars),
    loop_start_s: Number(meta.loop_start_s || 0),
    loop_end_s: Number(meta.loop_end_s || meta.duration_s),
    section: meta.section ? { index: meta.section.index, role: meta.section.role, bars: meta.section.bars,
                              phrase_bars: meta.section.phrase_bars } : null,
    cue: null,
  };
}

export class Engine {
  constructor({ fetchClip, onStart, onSection = () => {}, sleep = (s) => new Promise((r) => setTimeout(r, s * 1000)) }) {
    this.fetchClip = fetchClip; // url -> ArrayBuffer (throws when not there yet)
    this.onStart = onStart; // (voice) when a new cue (or plain clip) becomes the current one
    this.onSection = onSection; // (voice) when a cue moves on to its next section
    this.sleep = sleep;
    this.ctx = null;
    this.master = null;
    this.current = null;
    this.pending = null;
    this.timers = [];
    this.switches = []; // cue to cue
    this.sections = []; // every section (or clip) start: {job, cue, index, role, at, duration}
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
  async load(event, clip = event.clip, index = 0) {
    const stems = Object.entries(clip.stems || {});
    const parts = stems.length ? stems : [["mix", clip.url]];
    const decoded = await Promise.all(
      parts.map(async ([name, url]) => [name, await this.ctx.decodeAudioData(await this.fetchClip(url))]),
    );
    const cue = event.clip.cue;
    return { event, clip, cue, index, buffers: Object.fromEntries(decoded), gains: {}, sources: [], out: null,
             startedAt: null };
  }

  start(voice, when, fade) {
    const clip = voice.clip;
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

  // The voice is the current one from now on (a start that was dropped before it came is not).
  became(voice) {
    const clip = voice.clip;
    this.current = voice;
    this.sections.push({ job: voice.event.job_id, cue: voice.cue?.id ?? null, index: voice.index,
                         role: clip.section?.role ?? null, at: voice.startedAt,
                         duration: clip.loop_end_s - clip.loop_start_s, phrase: phraseSeconds(clip),
                         beat: beatSeconds(clip) });
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

  // Drop a switch that has not happened yet: the newest cue wins.
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

  // Hand over from the current voice to `voice` at `at`, fading over `fade` seconds.
  handOver(voice, at, fade, done) {
    const cur = this.current;
    this.start(voice, at, fade);
    cur.out.gain.setValueCurveAtTime(curve(false), at, fade);
    this.pending = voice;
    this.later(at, () => {
      this.pending = null;
      this.timers = [];
      this.became(voice);
      this.stop(cur, at + fade + 0.02);
      done(cur);
      this.prefetch(voice);
    });
  }

  // Play a new cue's first section (or a plain clip): now if nothing plays, else on the current
  // section's next phrase end (next beat for a cut).
  play(voice) {
    this.cancelPending();
    const now = this.ctx.currentTime;
    const cur = this.current;
    if (!cur) {
      this.start(voice, now + 0.05, 0.01);
      this.became(voice);
      this.switches.push({ from: null, to: voice.event.job_id, at: voice.startedAt, fade: 0 });
      this.later(voice.startedAt, () => this.onStart(voice));
      this.prefetch(voice);
      return voice.startedAt;
    }
    const at = now + switchIn(voice.event.transition, cur.clip, now - cur.startedAt);
    const fade = fadeSeconds(voice.event.transition, cur.clip);
    this.handOver(voice, at, fade, (old) => {
      this.switches.push({ from: old.event.job_id, to: voice.event.job_id, at, fade });
      this.onStart(voice);
    });
    return at;
  }

  // The cue's next section, once the synth has it; scheduled at the end of the current pass.
  async prefetch(voice) {
    const cue = voice.cue;
    if (!cue || !cue.sections?.length) return;
    let index = voice.index + 1;
    if (index >= cue.sections.length) index = cue.loop_from;
    const key = cue.sections[index]?.key;
    if (!KEY.test(key || "") || (index === voice.index && cue.sections.length === 1)) return;
    const clip = await this.section(key, voice);
    if (!clip || this.current !== voice || this.pending) return;
    let next;
    try {
      next = await this.load(voice.event, clip, index);
    } catch (e) {
      return; // the current section keeps looping; the next cue starts afresh
    }
    if (this.current !== voice || this.pending) return;
    const now = this.ctx.currentTime;
    const at = now + nextEndIn(voice.clip, now - voice.startedAt);
    this.handOver(next, at, SPLICE_S, () => this.onSection(next));
  }

  // A section's clip description, retried while it is still being rendered.
  async section(key, voice) {
    for (const wait of [0, ...RETRY_S, ...RETRY_S.slice(-1).flatMap((s) => Array(20).fill(s))]) {
      if (wait) await this.sleep(wait);
      if (this.current !== voice && this.pending !== voice) return null;
      try {
        const meta = JSON.parse(new TextDecoder().decode(await this.fetchClip(`/clips/${key}.json`)));
        return sectionClip(meta);
      } catch (e) {
        continue;
      }
    }
    return null;
  }

  // Seconds into the current section's timeline, for the page and the tests.
  position() {
    if (!this.current || !this.ctx) return null;
    return clipPosition(this.current.clip, Math.max(0, this.ctx.currentTime - this.current.startedAt));
  }
}
