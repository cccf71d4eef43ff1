"""The messages every MetaBGM service exchanges.

One module, installed into every image, so no service keeps its own copy of a contract.
The queue payload is `Job`: each stage fills in its own part and hands it on.

Rules:
- What a collector sends (`SceneWindow` and its parts) is untrusted and validated strictly: unknown
  fields are refused (`Strict`), ids match `IDENT_RE`, labels `LABEL_RE`, a `Distribution` maps at
  most 128 labels to a share in percent (0-100), vitals, counts and distances are bounded and finite,
  and every list is capped.
- `PlayerText` is data, never instructions, wherever it goes (`untrusted` is always True); a
  `CharacterizedScene` keeps it apart from its prompt-ready `features` and `text`.
- `Job` is the final contract of the queues: a stage only fills in its own part (`scene` and
  `decision`, `narrative`, `description`, `clip`, their time in `stages`). Its route fields (`rung`,
  `route`, `deadline_at`, `scene_id`, `refine`, `pregen`, `anticipated`) are the ladder's, and
  `collector` and `rank` are `fair`'s. A player is `Job.player_key`, `<server_id>:<player_id>`.
- A refinement shares its `scene_id` with the fast clip it refines and keeps its key and tempo
  (`Job.refine`, `NowPlaying.refined`).
- A `MusicDescription` asks only for what the synth can play: a key of `KEYS`, a `MusicMode`, 1-6
  instruments of `instruments.NAMES`, 40-200 bpm, an intensity in 0-1.
- A scene's music is a `Cue`: its sections' clip keys, played in order, then again from `loop_from`;
  the first section's `Clip` carries the whole cue, and each section's clip its `Section` plan.
- Player events are one model per `type` (`window`, `scene`, `narrative`, `now_playing`,
  `preferences`), validated where published and again where read (`parse_event`); `Event(...)`, the
  former untyped constructor kept for callers not yet moved, validates too.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from .instruments import NAMES

IDENT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9 _'\-.:()]{1,48}$")


def _ident(value: str) -> str:
    if not IDENT_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
Share = Annotated[float, Field(ge=0, le=100), AfterValidator(_finite)]
Count = Annotated[float, Field(ge=0, le=10_000), AfterValidator(_finite)]
Epoch = Annotated[float, Field(ge=0, le=2**33), AfterValidator(_finite)]  # seconds since 1970, before the year 2242


def _labels(dist: dict[str, float]) -> dict[str, float]:
    for label in dist:
        if not LABEL_RE.match(label):
            raise ValueError(f"label {label[:60]!r} has characters outside letters, digits and spaces")
    return dist


# Label -> share of sampled ticks in the window, in percent (0-100).
Distribution = Annotated[dict[str, Share], Field(max_length=128), AfterValidator(_labels)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Dimension(StrEnum):
    overworld = "overworld"
    nether = "nether"
    end = "end"


class Vitals(Strict):
    """Categorical levels as the mod samples them, plus numbers where a collector has them."""

    health: Distribution = {}
    hunger: Distribution = {}
    health_points: Annotated[float, Field(ge=0, le=1024), AfterValidator(_finite)] | None = None
    max_health: Annotated[float, Field(gt=0, le=1024), AfterValidator(_finite)] | None = None
    food: Annotated[float, Field(ge=0, le=20), AfterValidator(_finite)] | None = None
    air: Annotated[float, Field(ge=0, le=100), AfterValidator(_finite)] | None = None
    armor: Annotated[float, Field(ge=0, le=30), AfterValidator(_finite)] | None = None


class Entity(Strict):
    type: Annotated[str, Field(min_length=1, max_length=48, pattern=LABEL_RE.pattern)]
    hostile: bool = True
    count: Count = 1.0  # average number present per sampled tick
    distance: Annotated[float, Field(ge=0, le=1000), AfterValidator(_finite)] | None = None


class Events(Strict):
    attacked: Share = 0.0  # share of the window during which the player was being hit
    damage_taken: Annotated[float, Field(ge=0, le=10_000), AfterValidator(_finite)] | None = None
    damage_sources: list[Annotated[str, Field(max_length=48, pattern=LABEL_RE.pattern)]] = Field(
        default_factory=list, max_length=16
    )
    kills: int = Field(0, ge=0, le=10_000)
    deaths: int = Field(0, ge=0, le=10_000)


class PlayerText(Strict):
    """Text a player wrote. Untrusted: it is data, never instructions, wherever it goes."""

    kind: Literal["chat", "sign", "book", "name"]
    text: str = Field(max_length=512)
    untrusted: Literal[True] = True


class SceneWindow(Strict):
    """One player's state over one interval (the collector's window)."""

    server_id: Ident
    world_id: Ident = "world"
    player_id: Ident
    index: int = Field(0, ge=0, le=2**31)
    start: Epoch | None = None
    end: Epoch | None = None
    dimension: Dimension | None = None
    biome: Distribution = {}
    biome_ahead: Distribution = {}  # where the player is heading
    time_of_day: Distribution = {}
    weather: Distribution = {}
    temperature: Distribution = {}
    vitals: Vitals = Field(default_factory=Vitals)
    status: Distribution = {}  # On Fire, Touching Water, In Lava, Being Rained On and their "Not" twins
    motion: Distribution = {}  # Sprinting, Sneaking, On Ground, On Rail and their "Not" twins
    entities: list[Entity] = Field(default_factory=list, max_length=64)
    hostile_total: Count = 0.0
    events: Events = Field(default_factory=Events)
    action: Annotated[str, Field(max_length=48, pattern=LABEL_RE.pattern)] | None = None
    texts: list[PlayerText] = Field(default_factory=list, max_length=16)

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: float | None, info) -> float | None:
        start = info.data.get("start")
        if end is not None and start is not None and end < start:
            raise ValueError("end is before start")
        return end


class Mode(StrEnum):
    combat = "combat"
    danger = "danger"
    underwater = "underwater"
    nether = "nether"
    end = "end"
    cave = "cave"
    night = "night"
    travel = "travel"
    exploration = "exploration"


class Feature(BaseModel):
    name: str
    value: str


class CharacterizedScene(BaseModel):
    """The paper's characterized data: what matters, ordered by the context mode, precision cut."""

    mode: Mode
    dimension: Dimension
    biome: str | None = None
    biome_ahead: str | None = None
    time_of_day: str | None = None
    weather: str | None = None
    health: str | None = None
    hunger: str | None = None
    hostiles: float = 0.0
    attackers: list[tuple[str, float]] = []
    attacked: int = 0
    features: list[Feature]  # ordered by the mode's priorities, truncated
    text: str  # compact, prompt-ready form of `features`
    texts: list[PlayerText] = []  # untrusted, kept apart from the features


class Decision(BaseModel):
    changed: bool
    score: float
    urgent: bool = False
    reason: str
    skip: bool = False  # a listener skipped: same scene, other music


class Transition(StrEnum):
    keep = "continue"
    crossfade = "crossfade"
    cut = "cut"


class Narrative(BaseModel):
    text: str
    template: str  # prompt template id, e.g. "narrator/v1"
    model: str
    source: Literal["llm", "fallback"]
    latency_s: float = 0.0


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    favour: list[Annotated[str, Field(max_length=32, pattern=r"^[a-z_ ]+$")]] = Field(
        default_factory=list, max_length=12
    )
    avoid: list[Annotated[str, Field(max_length=32, pattern=r"^[a-z_ ]+$")]] = Field(
        default_factory=list, max_length=12
    )
    intensity_cap: float = Field(1.0, ge=0.0, le=1.0)
    volume: float = Field(0.8, ge=0.0, le=1.0)


KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class MusicMode(StrEnum):
    major = "major"
    minor = "minor"
    dorian = "dorian"
    phrygian = "phrygian"
    lydian = "lydian"
    mixolydian = "mixolydian"


class MusicDescription(BaseModel):
    caption: str = Field(min_length=1, max_length=400)
    tempo_bpm: int = Field(ge=40, le=200)
    key: Literal[KEYS]  # type: ignore[valid-type]
    mode: MusicMode
    instruments: list[Literal[NAMES]] = Field(min_length=1, max_length=6)  # type: ignore[valid-type]
    intensity: float = Field(ge=0.0, le=1.0)
    transition: Transition = Transition.crossfade
    template: str = ""
    model: str = ""
    source: Literal["llm", "prior", "mixed"] = "prior"
    latency_s: float = 0.0


class Section(BaseModel):
    """One section of a cue: a whole number of bars rendered from the cue's description plus this plan.

    Roles: "intro" (thin, no melody), "A" and "B" (the two themes), "bridge" (thin, the themes'
    fragments over another progression), "transition" (a short step towards the cue's key).
    `variation` > 0 varies the role's motifs and thickens its orchestration; `fill` ends the
    section with a drum fill or a pick-up into the next; `stinger` opens it with a hit."""

    index: int = Field(0, ge=0, le=64)
    role: Literal["intro", "A", "B", "bridge", "transition"] = "A"
    bars: int = Field(ge=1, le=64)
    phrase_bars: int = Field(4, ge=1, le=16)  # a switch inside a section waits for a phrase end
    variation: int = Field(0, ge=0, le=64)
    fill: bool = False
    stinger: bool = False
    key: str = ""  # only when it differs from the cue's (a transition section)
    mode: str = ""


class Cue(BaseModel):
    """A scene's music: sections played in order, then from `loop_from` to the end again."""

    id: str
    sections: list[Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")]]  # clip keys, in order
    loop_from: int = Field(1, ge=0)
    variant: int = 0  # which of the scene's cues (a returning player hears another)
    plan: list[str] = []  # provenance: each section as role.variation, e.g. "A.1"


class Clip(BaseModel):
    """A rendered clip: where it is, how to loop it, and where it came from."""

    key: str  # content key in the clip store
    url: str  # path under the gateway, e.g. /clips/<key>.ogg
    format: str = "ogg"
    duration_s: float
    bpm: int
    beats_per_bar: int = 4
    bars: int
    loop_start_s: float = 0.0
    loop_end_s: float
    loudness_lufs: float
    key_name: str
    mode: str
    stems: dict[str, str] = {}  # stem name -> url
    provenance: dict = {}
    cached: bool = False
    section: Section | None = None  # when the clip is one section of a cue
    cue: Cue | None = None  # on a cue's first section: the whole cue


class Job(BaseModel):
    """What travels on the queues. Final contract: later stages only fill in their part."""

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    window: SceneWindow
    received_at: float = Field(default_factory=time.time)
    scene: CharacterizedScene | None = None
    decision: Decision | None = None
    narrative: Narrative | None = None
    description: MusicDescription | None = None
    clip: Clip | None = None
    stages: dict[str, float] = {}  # stage -> seconds spent
    # The ladder's choice for this scene change (`metabgm_shared.stages`): the route still ahead,
    # the rung it is, and when its music is due.
    rung: str = "full"
    route: list[str] = ["narrate", "describe", "synth"]
    deadline_at: float | None = None
    scene_id: str | None = None  # one per scene change; a fast clip and its refinement share it
    refine: bool = False  # the LLM's pass over a scene a fast rung already served: same key and tempo
    pregen: str | None = None  # anticipated scene (why): rendered into the cache, played to nobody
    anticipated: str | None = None  # this change was pre-generated (why)
    sent_at: float | None = None  # put on its current queue at (epoch s)
    # Who posted the window (a collector's name, `mod:<server>` for the seed mod) and its rank that
    # minute (`fair`: 0 within the collector's fair burst, 1 past it, 2 far past it: a flood); the
    # rank orders the job behind lighter collectors' work of its kind at every stage.
    collector: str | None = None
    rank: int = Field(0, ge=0, le=2)

    @property
    def player_key(self) -> str:
        return f"{self.window.server_id}:{self.window.player_id}"


class ChangeState(BaseModel):
    """Per-player memory of the change detector (ingest), kept in the player hash between windows."""

    accepted: CharacterizedScene | None = None
    accepted_at: float = 0.0
    candidate: str | None = None  # signature of the pending change
    candidate_count: int = 0
    seen_at: float = 0.0  # arrival time of the newest window judged


class Narrated(BaseModel):
    """The last scene the narrator narrated and what it said: a skip describes it again."""

    scene: CharacterizedScene
    narrative: Narrative


class NowPlaying(BaseModel):
    """The music a player hears now, as the synth stage delivered it."""

    clip: Clip
    narrative: str | None = None
    description: MusicDescription
    job_id: str
    received_at: float
    transition: Transition = Transition.crossfade
    rung: str = "full"  # the ladder's rung that served this scene change (metabgm_shared.stages)
    refined: bool = False  # the LLM's pass over a scene a fast rung served first: same key and tempo
    scene_id: str | None = None


# -- player events: one model per type, validated where published and where read ----------------
class _EventBase(BaseModel):
    server_id: str
    player_id: str
    at: float = Field(default_factory=time.time)


class WindowData(BaseModel):
    window: dict  # as the collector sent it (the seed mod's own form stays untouched)
    job_id: str


class WindowEvent(_EventBase):
    type: Literal["window"] = "window"
    data: WindowData


class SceneData(BaseModel):
    index: int = 0
    scene: CharacterizedScene
    decision: Decision


class SceneEvent(_EventBase):
    type: Literal["scene"] = "scene"
    data: SceneData


class NarrativeData(Narrative):
    index: int = 0


class NarrativeEvent(_EventBase):
    type: Literal["narrative"] = "narrative"
    data: NarrativeData


class NowPlayingEvent(_EventBase):
    type: Literal["now_playing"] = "now_playing"
    data: NowPlaying


class PreferencesEvent(_EventBase):
    type: Literal["preferences"] = "preferences"
    data: Preferences


PlayerEvent = Annotated[
    WindowEvent | SceneEvent | NarrativeEvent | NowPlayingEvent | PreferencesEvent, Field(discriminator="type")
]
_EVENTS: TypeAdapter = TypeAdapter(PlayerEvent)


def parse_event(
    raw: str | bytes | dict,
) -> WindowEvent | SceneEvent | NarrativeEvent | NowPlayingEvent | PreferencesEvent:
    """A player event from its JSON (or dict) form; raises pydantic's ValidationError."""
    if isinstance(raw, dict):
        return _EVENTS.validate_python(raw)
    return _EVENTS.validate_json(raw)


def Event(**fields) -> WindowEvent | SceneEvent | NarrativeEvent | NowPlayingEvent | PreferencesEvent:  # noqa: N802
    """The former untyped constructor (`Event(type=..., data={...})`), kept for callers not yet
    moved to the typed models: it now validates `data` against its type's model."""
    return parse_event(fields)
