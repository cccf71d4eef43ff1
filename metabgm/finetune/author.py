"""The corpus's outputs, written from phrase banks authored for this project (no model wrote them).

Rules:
- A narrative names only what the scene's prompt text shows: the biome only when `biome` is a
  feature, mobs only from `attackers` / `hurt by`, weather only when `weather` is a feature, the
  dimension only in the Nether or the End, never a number or a vocabulary placeholder. It is
  addressed to the player ("you"), 1-2 sentences, and it does not reuse an opening the player
  heard in the last three narratives (a fresh opener is drawn instead); after a change of mode it
  may open with a turn ("Then", "All at once", ...), within one mode with a continuation ("Still").
- Player text never changes an output: the writers do not read it.
- A description keeps the musical prior's bounds (tempo, intensity, keys, modes, palette), takes
  the player's preferences where the bounds allow (avoided instruments left out, favoured ones
  added when in the palette, intensity under the cap when the bounds reach that low), stays
  within a fifth and 12 % of the music playing unless the change is urgent, and its caption
  names its genre, mood, every instrument, the tempo, the key and mode and a texture that fits
  the intensity.
"""

from __future__ import annotations

import random
import re

from metabgm_shared.contracts import CharacterizedScene, Dimension, Mode, MusicDescription, Preferences
from metabgm_shared.instruments import NAMES
from metabgm_shared.prior import GENRES, Prior, avoided, fifths_distance, level

# -- narrator ------------------------------------------------------------------------------------
TIME = {
    "Sunrise": ["as the sun comes up", "at first light", "while dawn breaks"],
    "Day": ["in broad daylight", "under an open sky", "in the full light of day"],
    "Noon": ["under the high noon sun", "at midday", "with the sun straight overhead"],
    "Afternoon": ["in the long afternoon", "as the afternoon wears on", "in the warm afternoon light"],
    "Sunset": ["as the sun goes down", "at dusk", "while the light turns orange"],
    "Night": ["in the dark of night", "under the night sky", "after nightfall"],
    "Midnight": ["at midnight", "deep in the night", "in the dead of night"],
}
SKY = {
    "Clear": ["under a clear sky", "in still, clear air"],
    "Cloudy": ["under grey clouds", "beneath a heavy, clouded sky"],
    "Raining": ["in the steady rain", "with rain running down your collar", "through a cold downpour"],
    "Thundering": ["while thunder rolls overhead", "under a crackling thunderstorm", "as lightning splits the sky"],
    "Snow": ["through falling snow", "as snowflakes drift around you", "in the hush of falling snow"],
}
SKY_LINE = {
    "Clear": ["The sky above you is wide and clear.", "Not a cloud hangs over you."],
    "Cloudy": ["Grey clouds press low over your head.", "The light around you is dull and grey."],
    "Raining": ["Rain patters on everything around you.", "The rain keeps falling, soaking you through.",
                "You blink raindrops from your eyes."],
    "Thundering": ["Thunder shakes the ground beneath you.", "Lightning flashes and you flinch.",
                   "The storm roars around you."],
    "Snow": ["Snow settles softly on your shoulders.", "Your breath fogs in the falling snow."],
}  # fmt: skip
OPEN = {
    Mode.exploration: [
        "You wander through {place} {time}.", "You take your time crossing {place}.",
        "You look around {place}, nothing pressing on you.", "You stroll through {place} {sky}.",
        "You pause to take in {place} {time}.", "Your steps are unhurried as you explore {place}.",
        "You drift across {place}, curious about what lies over the next rise.",
        "You explore {place} {time}, {sky}.", "You roam {place} with the day ahead of you.",
        "You amble along, taking in {place}.", "The quiet of {place} settles around you.",
        "You potter about {place}, in no hurry at all.",
    ],
    Mode.night: [
        "You pick your way through {place} {time}.", "Darkness wraps around you in {place}.",
        "You keep your eyes open as you move through {place} {time}.",
        "The night is deep around you in {place}.", "You walk softly through {place}, the dark pressing close.",
        "You stay alert in {place} {time}.", "Shadows stretch around you as you cross {place} {time}.",
        "You move carefully {time}, {sky}.", "Every sound makes you turn your head {time}.",
        "You hold your breath at each rustle in {place}.",
    ],
    Mode.travel: [
        "You race across {place} toward {ahead}.", "You sprint through {place}, wind in your face.",
        "You head for {ahead} at a steady clip.", "You cover ground fast, leaving {place} behind.",
        "You push on toward {ahead}.", "You hurry through {place} {time}.",
        "You set a quick pace across {place}.", "You press forward, {ahead} drawing nearer.",
        "The land rushes past you as you travel.", "You keep moving, eager to reach {ahead}.",
    ],
    Mode.combat: [
        "You fight for your life as {foes} close in.", "You swing hard at {foes}.",
        "You are in the thick of it, {foes} all around you.", "You dodge and strike as {foes} press the attack.",
        "You stand your ground against {foes}.", "You trade blows with {foes}, heart pounding.",
        "You back away, parrying {foes}.", "{Foes} come at you and you meet them head on.",
        "You are under attack from {foes} in {place}.", "You whirl to face {foes}.",
        "Blows rain down as you battle {foes}.", "You fight back against {foes} {time}.",
    ],
    Mode.danger: [
        "You are in serious trouble.", "You stagger on, barely holding together.",
        "Everything hangs by a thread for you now.", "You are close to the edge.",
        "You scramble to stay alive in {place}.", "Your vision swims as you struggle on.",
        "You feel your strength slipping away.", "You have to act fast to survive.",
        "You cling to life in {place}.", "Each heartbeat counts for you now.",
    ],
    Mode.underwater: [
        "You glide through the water of {place}.", "You swim slowly beneath the surface of {place}.",
        "Water closes over your head as you dive.", "You drift through cool blue water.",
        "You kick through the water, light rippling above you.", "You paddle on through {place}.",
        "Muffled silence surrounds you under the water.", "You swim deeper, bubbles trailing behind you.",
        "You float weightless in {place}.",
    ],
    Mode.cave: [
        "You feel your way through {place}.", "Your footsteps echo through {place}.",
        "You descend deeper into {place}.", "Darkness and stone surround you in {place}.",
        "Water drips somewhere in {place} as you pass.", "You squeeze through a narrow passage of {place}.",
        "You creep along the walls of {place}.", "The air grows still and cool as you explore {place}.",
        "Your torchlight flickers across {place}.",
    ],
    Mode.nether: [
        "You pick your way across {place}, heat shimmering around you.", "The heat of the Nether presses on you.",
        "You tread carefully through {place}.", "Ash drifts past you in {place}.",
        "You keep to the edge of {place}, wary of the lava below.", "The Nether glows red around you.",
        "You push through the choking heat of {place}.", "Every step you take in {place} feels like a risk.",
        "You move through the Nether with your guard up.",
    ],
    Mode.end: [
        "You walk across the pale stone of {place}.", "The void yawns around you in {place}.",
        "Silence hangs over {place} as you walk.", "You wander the strange islands of the End.",
        "You step lightly across {place}, the dark sky endless above.", "The End stretches cold and empty around you.",
        "You move through {place}, far from home.", "You cross {place} under a starless sky.",
    ],
}  # fmt: skip
AMBIENT = {
    Mode.exploration: ["You breathe in the fresh air.", "You feel at ease.", "Nothing troubles you for now.",
                       "You could stay here a while.", "A light breeze tugs at your sleeves."],
    Mode.night: ["You listen for footsteps behind you.", "You wish you had brought more torches.",
                 "Your eyes strain against the gloom.", "You keep one hand on your sword."],
    Mode.travel: ["Your legs ache but you keep going.", "You do not look back.", "The wind whips past your ears.",
                  "You feel the miles pass under your feet."],
    Mode.combat: ["Your heart hammers in your chest.", "You grit your teeth and keep swinging.",
                  "You have no time to think.", "Sweat stings your eyes as you fight."],
    Mode.danger: ["You need somewhere safe, fast.", "Panic rises in your chest.", "You fight to keep your head clear."],
    Mode.underwater: ["Light ripples on the surface above you.", "You let a stream of bubbles escape.",
                      "Everything around you moves slowly."],
    Mode.cave: ["You hear stones skitter somewhere below you.", "The walls close in around you.",
                "Your breath sounds loud in the stillness.", "You tread softly on the stone."],
    Mode.nether: ["Heat rolls off the ground in waves around you.", "You wipe sweat from your brow.",
                  "The air tastes of ash and sulphur to you.", "You keep well away from the edges."],
    Mode.end: ["Your footsteps make no echo here.", "You feel very small under the black sky.",
               "The silence presses on your ears.", "You wonder how far you are from home."],
}  # fmt: skip
TURN = ["Then", "All at once", "Now", "Before long", "Soon", "Moments later"]
KEEP = ["Still", "Even now", "For a while longer"]
HEALTH = ["Your health is nearly gone.", "You are badly hurt.", "Your wounds slow you down.",
          "One more hit could finish you.", "Your life hangs by a thread."]  # fmt: skip
HUNGER = {"Hungry": ["Your stomach growls.", "You are getting hungry."],
          "Starve": ["You are starving.", "Hunger gnaws at you with every step."]}  # fmt: skip
FOES_NEAR = ["You can hear {foes} not far away.", "You sense {foes} somewhere nearby.",
             "You spot {foes} at the edge of your sight.", "You keep an eye on {foes} nearby."]  # fmt: skip
HURT = ["You are still reeling from the {hurt}.", "The {hurt} has left its mark on you."]
STATUS = {"On Fire": ["Flames lick at your clothes.", "You are on fire."],
          "In Lava": ["Lava sears your legs.", "You flounder in the lava."],
          "Touching Water": ["Water swirls around you.", "You are soaked to the skin."]}  # fmt: skip
AIR = ["Your lungs burn for air.", "You are running out of breath.", "You need to surface now."]
DEATH = ["You have just come back from a death.", "You shake off the memory of dying a moment ago."]
COLD = ["The cold bites at your fingers.", "You shiver in the chill."]
ACTION = ["You keep {action}.", "You carry on {action}.", "You go on {action} without a pause."]
HEADING = ["Ahead of you lies {ahead}.", "You can almost see {ahead} from here.", "Your path leads on to {ahead}."]
DAMAGE_WORD = {"fall": "fall", "lava": "lava", "fire": "burns", "drowning": "near drowning", "starve": "hunger",
               "explosion": "blast", "arrow": "arrow wound", "magic": "magic", "in_fire": "burns",
               "on_fire": "burns"}  # fmt: skip


def _mob(name: str, count: float) -> str:
    if name == "unknown":
        return "something hostile"
    word = name.replace("_", " ")
    if count >= 1.5:
        return {"enderman": "endermen", "witch": "witches", "wolf": "wolves"}.get(word, word + "s")
    return ("an " if word[0] in "aeiou" else "a ") + word


def _foes(attackers: list[tuple[str, float]], rng: random.Random) -> str:
    """The attackers in one of several phrasings, so consecutive narratives do not share them."""
    named = [_mob(n, c) for n, c in attackers[:2]]
    if len(named) == 1 or rng.random() < 0.3:
        one = named[0] if named[0] == "something hostile" or rng.random() < 0.5 else _mob(attackers[0][0], 2.0)
        return one if not one.startswith(("a ", "an ")) or rng.random() < 0.5 else "the " + one.split(" ", 1)[1]
    a, b = named if rng.random() < 0.6 else named[::-1]
    return rng.choice(["{a} and {b}", "{a} backed by {b}", "{a} with {b} close behind", "{a} along with {b}"]).format(
        a=a, b=b
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _biome(name: str | None) -> str | None:
    if not name or name == "Unknown":
        return None
    if name == "The End":
        return "the End"
    words = [w if w in ("Nether", "End") else w.lower() for w in name.split()][-3:]  # a 4-word run is a copy
    return "the " + " ".join(words)


def slots(scene: CharacterizedScene, rng: random.Random) -> dict[str, str]:
    """What a narrative may name, from the scene's visible features only."""
    shown = {f.name: f.value for f in scene.features}
    s: dict[str, str] = {}
    place = _biome(scene.biome) if "biome" in shown else None
    if place is None and scene.dimension is not Dimension.overworld:
        place = "the Nether" if scene.dimension is Dimension.nether else "the End"
    if place:
        s["place"] = place
    if "time" in shown and scene.time_of_day in TIME:
        s["time"] = rng.choice(TIME[scene.time_of_day])
    if "weather" in shown and scene.weather in SKY:
        s["sky"] = rng.choice(SKY[scene.weather])
    if "attackers" in shown and scene.attackers:
        foes = _foes(scene.attackers, rng)
        s["foes"], s["Foes"] = foes, foes[0].upper() + foes[1:]
    if "heading" in shown and scene.biome_ahead:
        s["ahead"] = _biome(scene.biome_ahead) or ""
    if "action" in shown and shown["action"] != "unknown":
        s["action"] = shown["action"]
    if "hurt by" in shown:
        first = shown["hurt by"].split(",")[0].strip()
        s["hurt"] = DAMAGE_WORD.get(first, "")
    return {k: v for k, v in s.items() if v}


# "in the beach" reads wrong: shores and rivers take their own prepositions.
PREPOSITIONS = re.compile(r"\bin the (beach|snowy beach|stony shore|river|frozen river)\b")


def _fill(template: str, s: dict[str, str]) -> str | None:
    needed = re.findall(r"{(\w+)}", template)
    if any(n not in s for n in needed):
        return None
    text = template.format(**{n: s[n] for n in needed})
    return PREPOSITIONS.sub(lambda m: ("by the " if "river" in m.group(1) else "on the ") + m.group(1), text)


def extras(scene: CharacterizedScene, s: dict[str, str]) -> list[list[str]]:
    """Candidate second sentences, most important kinds first."""
    shown = {f.name: f.value for f in scene.features}
    out: list[list[str]] = []
    if "deaths" in shown:
        out.append(DEATH)
    if "air" in shown:
        out.append(AIR)
    if "status" in shown:
        out += [STATUS[k] for k in STATUS if k in shown["status"]]
    if scene.health in ("Dying", "Die") and "health" in shown and scene.mode is not Mode.danger:
        out.append(HEALTH)
    elif scene.health in ("Dying", "Die") and "health" in shown:
        out.append([h for h in HEALTH if "badly" not in h])
    if "hurt" in s:
        out.append([_fill(h, s) for h in HURT])
    if "hunger" in shown and scene.hunger in HUNGER:
        out.append(HUNGER[scene.hunger])
    if "foes" in s and scene.mode is not Mode.combat:
        out.append([_fill(f, s) for f in FOES_NEAR])
    if "sky" in s:
        out.append(SKY_LINE[scene.weather])
    if "ahead" in s and scene.mode is not Mode.travel:
        out.append([_fill(h, s) for h in HEADING])
    if "action" in s:
        out.append([_fill(a, s) for a in ACTION])
    if "temperature" in shown and "Cold" in shown["temperature"]:
        out.append(COLD)
    return out + [AMBIENT[scene.mode]]


def narrative(scene: CharacterizedScene, recent: list[str], previous_mode: Mode | None, rng: random.Random) -> str:
    """One candidate narrative; the caller checks it and asks again if it fails."""
    s = slots(scene, rng)
    openers = [t for t in (_fill(o, s) for o in OPEN[scene.mode]) if t]
    heard = {r.split(".")[0].lower() for r in recent}
    fresh = [o for o in openers if not any(o.rstrip(".").lower().endswith(h[-24:]) for h in heard)] or openers
    first = rng.choice(fresh)
    if recent and rng.random() < 0.45:
        words = [w for w in (KEEP if previous_mode is scene.mode else TURN) if w.lower() not in first.lower()]
        word = rng.choice(words)
        comma = not first.startswith("You") or word in ("All at once", "Moments later")
        first = f"{word}{',' if comma else ''} {first[0].lower()}{first[1:]}"
    pool = extras(scene, s)
    if pool and rng.random() < 0.75:
        kinds = pool[:2] if rng.random() < 0.7 else pool
        second = rng.choice(rng.choice(kinds))
        if second and second.lower()[:12] not in first.lower():
            return f"{first} {second}"
    return first


# -- describer -----------------------------------------------------------------------------------
MOODS = {
    Mode.exploration: ["peaceful", "open", "gentle", "carefree", "bright", "easygoing", "warm", "pastoral"],
    Mode.night: ["quiet", "nocturnal", "hushed", "watchful", "still", "lonely", "shadowy"],
    Mode.travel: ["adventurous", "moving", "buoyant", "restless", "eager", "striding", "hopeful"],
    Mode.combat: ["tense", "driving", "fierce", "urgent", "relentless", "heroic", "frantic"],
    Mode.danger: ["urgent", "anxious", "desperate", "fraught", "uneasy", "breathless"],
    Mode.underwater: ["muffled", "floating", "dreamy", "weightless", "submerged", "serene"],
    Mode.cave: ["echoing", "mysterious", "cavernous", "wary", "dim", "hollow"],
    Mode.nether: ["ominous", "fiery", "menacing", "smouldering", "oppressive", "infernal"],
    Mode.end: ["alien", "vast", "eerie", "desolate", "cold", "otherworldly"],
}
MOD_MOODS = {"rain": ["rainy", "melancholy", "wistful"], "thunder": ["stormy", "turbulent"], "snow": ["snowy", "crisp"],
             "dying": ["desperate", "fragile"], "dusk": ["warm", "fading"]}  # fmt: skip
TEXTURE = {
    "low": ["sparse", "airy", "soft", "spacious", "delicate", "gentle"],
    "medium": ["flowing", "layered", "steady", "even", "rolling"],
    "high": ["dense", "pounding", "driving", "thick", "surging", "heavy"],
}
LEVEL = {"low": ["low intensity", "restrained", "understated"], "medium": ["medium intensity", "moderate energy"],
         "high": ["high intensity", "full force", "high energy"]}  # fmt: skip
CAPTIONS = [
    "{Genre} piece, {moods}: {instr} at {tempo} BPM in {key} {mode}, {texture} and {level}.",
    "{A_moods} {genre} cue with {instr}; {tempo} BPM, {key} {mode}, {a_texture} texture at {level}.",
    "{Moods} {genre} for {hint}: {lead} out front over {rest}, {tempo} BPM in {key} {mode}, {texture}, {level}.",
    "{tempo} BPM {genre} in {key} {mode}: {instr}, {moods}, {texture} and loopable, {level}.",
    "{Genre} loop in {key} {mode} at {tempo} BPM, {moods}; {instr} in a {texture} arrangement, {level}.",
    "For {hint}, {a_texture} {genre} track in {key} {mode} at {tempo} BPM: {instr}, {moods}, {level}.",
    "{Moods} and {texture}: {genre} with {lead} up front and {rest} beneath, {key} {mode}, {tempo} BPM, {level}.",
    "{A_texture} bed of {instr}, {genre}, {moods}, {tempo} BPM in {key} {mode}, {level}.",
]
GENRE_WORDS = {"calm acoustic": ["calm acoustic", "gentle acoustic"], "folk": ["folk", "upbeat folk"],
               "ambient": ["ambient", "soft ambient"], "epic orchestral": ["epic orchestral", "orchestral battle"],
               "dark cinematic": ["dark cinematic", "tense cinematic"],
               "dark ambient": ["dark ambient", "brooding ambient"],
               "ethereal ambient": ["ethereal ambient", "spacious ambient"]}  # fmt: skip


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _hint(scene: CharacterizedScene, rng: random.Random) -> str:
    shown = {f.name for f in scene.features}
    place = (_biome(scene.biome) if "biome" in shown else None) or {"nether": "the Nether", "end": "the End"}.get(
        scene.dimension.value, "the open world"
    )
    what = {Mode.combat: "a fight", Mode.danger: "a close call", Mode.night: "a night", Mode.travel: "a journey",
            Mode.cave: "a descent", Mode.underwater: "a swim", Mode.nether: "a crossing", Mode.end: "a walk",
            Mode.exploration: "a wander"}[scene.mode]  # fmt: skip
    return f"{what} in {place}" if rng.random() < 0.8 else what


def _moods(scene: CharacterizedScene, rng: random.Random) -> list[str]:
    words = rng.sample(MOODS[scene.mode], 2)
    weather = (scene.weather or "").lower()
    extra = []
    if "thunder" in weather:
        extra = MOD_MOODS["thunder"]
    elif "rain" in weather:
        extra = MOD_MOODS["rain"]
    elif "snow" in weather:
        extra = MOD_MOODS["snow"]
    if scene.health in ("Dying", "Die"):
        extra = extra + MOD_MOODS["dying"]
    if scene.time_of_day == "Sunset":
        extra = extra + MOD_MOODS["dusk"]
    if extra and rng.random() < 0.7:
        words = [words[0], rng.choice(extra)]
    if rng.random() < 0.3:
        words.append(rng.choice([m for m in MOODS[scene.mode] if m not in words]))
    return list(dict.fromkeys(words))


def _instruments(p: Prior, prefs: Preferences | None, rng: random.Random) -> list[str]:
    palette = list(p.bounds.palette)
    avoid = avoided(prefs)
    chosen = [i for i in p.instruments if i not in avoid]
    spare = [i for i in palette if i not in chosen and i not in avoid]
    if spare and rng.random() < 0.5:
        if chosen and rng.random() < 0.5:
            chosen[rng.randrange(len(chosen))] = spare.pop(rng.randrange(len(spare)))
        else:
            chosen.append(spare.pop(rng.randrange(len(spare))))
    for f in prefs.favour if prefs else []:
        for n in GENRES.get(f, (f,)):
            if n in palette and n not in avoid and n not in chosen:
                chosen.insert(0, n)
                break
    chosen = list(dict.fromkeys(chosen))[:4]
    if not chosen:
        chosen = [next(i for i in palette if i not in avoid)] if any(i not in avoid for i in palette) else [palette[0]]
    rng.shuffle(chosen) if rng.random() < 0.3 else None
    return chosen


def _key(p: Prior, previous: MusicDescription | None, urgent: bool, rng: random.Random) -> str:
    keys = list(p.bounds.keys)
    if previous is not None and not urgent:
        return min(keys, key=lambda k: (fifths_distance((k, p.mode.value), (previous.key, str(previous.mode))),
                                        k != p.key))  # fmt: skip
    return p.key if rng.random() < 0.75 else rng.choice(keys)


def _tempo(p: Prior, previous: MusicDescription | None, urgent: bool, rng: random.Random) -> int:
    lo, hi = p.bounds.tempo
    t = p.tempo_bpm + rng.choice([-8, -6, -4, -2, 0, 0, 2, 4, 6, 8])
    if previous is not None and not urgent:
        plo, phi = previous.tempo_bpm * 0.88, previous.tempo_bpm * 1.12
        if max(lo, plo) <= min(hi, phi):
            lo, hi = max(lo, int(plo) + 1), min(hi, int(phi))
    return int(max(lo, min(hi, t)))


def description(scene: CharacterizedScene, p: Prior, prefs: Preferences | None, previous: MusicDescription | None,
                urgent: bool, rng: random.Random) -> dict:  # fmt: skip
    """The describer's answer: caption plus attributes, as the compact template's schema asks them
    (intensity 0-100)."""
    b = p.bounds
    mode = p.mode.value if rng.random() < 0.7 else rng.choice([m.value for m in b.modes])
    intensity = round(
        min(b.intensity[1], max(b.intensity[0], p.intensity + rng.choice([-0.08, -0.04, 0, 0.04, 0.08]))), 2
    )
    if prefs is not None and prefs.intensity_cap < intensity:
        intensity = round(max(b.intensity[0], prefs.intensity_cap), 2)
    attrs = {"tempo_bpm": _tempo(p, previous, urgent, rng), "key": _key(p, previous, urgent, rng), "mode": mode,
             "instruments": _instruments(p, prefs, rng), "intensity": intensity}  # fmt: skip
    genre = rng.choice(GENRE_WORDS.get(p.genre, [p.genre]))
    for f in prefs.favour if prefs else []:
        if f in GENRES and f not in (prefs.avoid if prefs else []):
            genre = f
    moods = _moods(scene, rng)
    names = [i.replace("_", " ") for i in attrs["instruments"]]
    lv = level(intensity)
    values = {
        "genre": genre, "Genre": genre[0].upper() + genre[1:], "moods": " and ".join(moods[:2]) if len(moods) < 3
        else f"{moods[0]}, {moods[1]} and {moods[2]}", "instr": _join(names), "lead": names[0],
        "rest": _join(names[1:]) if len(names) > 1 else "a low drone", "tempo": attrs["tempo_bpm"],
        "key": attrs["key"], "mode": mode, "texture": rng.choice(TEXTURE[lv]), "level": rng.choice(LEVEL[lv]),
        "hint": _hint(scene, rng),
    }  # fmt: skip
    values["Moods"] = values["moods"][0].upper() + values["moods"][1:]
    values["a_texture"] = _a(values["texture"])
    values["A_texture"] = "A" + values["a_texture"][1:]
    values["A_moods"] = "A" + _a(values["moods"])[1:]
    templates = CAPTIONS if len(names) > 1 else [c for c in CAPTIONS if "{rest}" not in c]
    cap = rng.choice(templates).format(**values)
    return {"caption": cap, "mood": " ".join(moods), **attrs, "intensity": round(intensity * 100)}


def caption_words() -> set[str]:
    """Every word the caption banks can write (a player may happen to use one of them too)."""
    lists = (*TEXTURE.values(), *LEVEL.values(), *GENRE_WORDS.values(), *MOODS.values(), *MOD_MOODS.values())
    banks = [*CAPTIONS, *(w for ws in lists for w in ws), *(n.replace("_", " ") for n in NAMES)]
    return set(re.findall(r"[a-z]+", " ".join(banks).lower()))
