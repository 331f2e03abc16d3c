"""A deterministic offline model: a whole plausible session with no network and no data.

It writes each agent's reply from the engine's brief, as the same JSON a real
model returns, streamed in small chunks through the same path. It reads the idea
(subject, place, time of day, objects; see `bot.llm.idea`) and builds every draft
from it; the persona's look (its TOML `[look]`, or one derived from a free-text
persona's words) drives camera, light, palette and style; the target's layout
shapes the prompt text the way its vendor's guide asks.

The persona raises its private must-haves one at a time, each as a concrete
objection in its own words; the Copilot reads that objection in the persona's
message and answers it in the next draft. Teammates' interjections are taken up
in the next draft too. The persona approves once the latest draft meets all its
must-haves (plus a little polish when the round budget allows), so the number of
rounds varies with the idea, the persona and `--rounds`. Same inputs, same
outputs. Nothing it writes is marked "offline": the surfaces say that once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.llm.base import ModelReply, ModelRequest, TextCallback
from bot.llm.idea import (
    PLACES,
    Idea,
    kind_of,
    light_source,
    read_idea,
    sound_cue,
    time_of,
)
from bot.llm.offline_sheet import sheet_from_words
from bot.llm.usage import Usage

OFFLINE_MODEL = "offline-deterministic"
CHUNK_CHARS = 24

_VERTICAL = re.compile(r"^(?:720x1280|1024x1792|9:16|720:1280|3:4)$")


class OfflineModel:
    def __init__(
        self,
        *,
        latency: float = 0.0,
        revisions_before_approval: int | None = None,
        stream_s: float = 0.0,
    ):
        """`revisions_before_approval` holds the persona back that long (benchmarks use it to
        run sessions to the round limit); by default it approves when satisfied.
        `latency`: seconds before the first word; `stream_s`: seconds over which the
        message then streams, as Claude writes (benchmarks); by default all at once."""
        self.latency = latency
        self.revisions_before_approval = revisions_before_approval
        self.stream_s = stream_s

    @property
    def offline(self) -> bool:
        return True

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        text = self.write(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if on_text is not None:
            # What a person sees streams over `stream_s`: the message, the reply's first
            # field; the draft's JSON after it follows at once.
            shown = len(json.dumps(json.loads(text).get("message", ""), ensure_ascii=False))
            pause = self.stream_s / max(1, shown // CHUNK_CHARS)
            for i in range(0, len(text), CHUNK_CHARS):
                if pause and 0 < i <= shown:
                    await asyncio.sleep(pause)
                await on_text(text[i : i + CHUNK_CHARS])
        prompt_chars = len(request.system) + sum(len(m.content) for m in request.messages)
        usage = Usage(input_tokens=prompt_chars // 4, output_tokens=max(len(text) // 4, 1))
        return ModelReply(text=text, stop_reason="end_turn", usage=usage, model=OFFLINE_MODEL)

    def write(self, request: ModelRequest) -> str:
        """The reply's JSON text for `request`, the same every time."""
        brief = request.brief
        if request.agent == "sheet":
            return json.dumps(sheet_from_words(brief["description"]), ensure_ascii=False)
        if request.agent == "copilot":
            payload = _copilot(brief)
        else:
            payload = _persona(brief, self.revisions_before_approval)
        return json.dumps(payload, ensure_ascii=False)


# ---- the shot being built ---------------------------------------------------------------


@dataclass
class Shot:
    """Everything a draft says, before it is laid out for a target."""

    idea: Idea
    subject: str
    place: str
    time: str
    style: str
    camera: str
    lens: str
    light: str
    palette: str
    mood: str
    sound: str
    beats: list[str]
    avoid: list[str]
    composition: str = ""
    kind: str = "person"  # what the subject is: "person", "animal" or "thing"
    weather: str = ""
    details: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    size: str = ""
    duration: int = 0


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _clean(s: str) -> str:
    return s.strip().rstrip(".").strip()


def _time_from_look(light: str) -> str:
    low = light.lower()
    if "night" in low or "neon" in low or "stage" in low:
        return "at night"
    if "morning" in low:
        return "in the early morning"
    if "high-key" in low or "daylight" in low:
        return "at midday"
    if "golden" in low or "low sun" in low:
        return "at golden hour"
    return "in the late afternoon"


def _light_for(light: str, time: str, weather: str = "") -> str:
    """The persona's light, made possible at the hour and in the weather (no daylight at
    midnight, no low sun in a storm)."""
    night = re.search(r"night|midnight|evening|twilight|dusk|blue hour", time)
    if night and re.search(r"daylight|sun|morning|high-key|golden", light):
        return "practical light from lamps and windows, soft and low"
    if re.search(r"rain|storm|fog|snow", weather) and re.search(r"sun|golden|high-key", light):
        return "flat grey light under heavy cloud"
    if (
        not night
        and re.search(r"\bnight\b", light)
        and re.search(r"dawn|morning|noon|midday", time)
    ):
        return "soft early daylight"
    return light


def _look(persona: dict[str, Any]) -> dict[str, str]:
    look: dict[str, str] = dict(persona.get("look") or {})
    defaults = {
        "camera": "steady medium shot, one slow push-in",
        "lens": "35mm lens",
        "light": "soft directional daylight",
        "palette": "warm neutrals with one saturated accent",
        "style": "grounded cinematic realism",
        "sound": "natural ambience",
        "mood": "intimate",
    }
    return {k: look.get(k) or v for k, v in defaults.items()}


_WEATHER = frozenset("storm rain snow wind fog mist weather sky".split())


def _first_shot(brief: dict[str, Any], note: NoteChange | None = None) -> Shot:
    """The first draft's shot, from the idea, the persona's look and the teammates' notes
    (which override the idea's time, weather, place, subject and the look's camera)."""
    idea = read_idea(brief["idea"])
    look = _look(brief["persona"])
    target = brief["target"]
    note = note or NoteChange()
    subject = note.subject or idea.subject or "the subject"
    kind = kind_of(subject)
    place = note.place or idea.place or f"a quiet place that belongs to {subject}"
    time = note.time or idea.time or _time_from_look(look["light"])
    weather = note.weather
    objects = [o for o in idea.objects if idea.head(o) not in _WEATHER]
    obj = objects[0] if objects else ""
    opening = f"{subject} waits alone" + (f", {obj} close at hand" if obj else f" in {place}")
    last_obj = objects[1] if len(objects) > 1 else obj
    ending = f"the shot ends on {subject}" + (f" with {last_obj}" if last_obj else f" in {place}")
    beats = [
        opening,
        _action_beat(idea, subject, kind, look["mood"]),
        f"{ending}, held for a breath",
    ]
    durations: list[int] = target["durations"]
    # Three beats want room: the legal duration nearest 8 seconds.
    duration = min(durations, key=lambda d: (abs(d - 8), d))
    avoid = ["on-screen text", "logos"]
    avoid.append("distorted hands or faces" if kind == "person" else "extra limbs or warped shapes")
    sound = note.sound or look["sound"]
    return Shot(
        idea=idea,
        subject=subject,
        place=f"{place} {weather}".strip() if weather else place,
        time=time,
        style=look["style"],
        camera=_camera_for(note.camera or look["camera"], subject, kind),
        lens=look["lens"],
        light=_light_for(look["light"], time, weather),
        palette=look["palette"],
        mood=note.mood or look["mood"],
        sound=f"{sound}; {sound_cue(idea)} as the scene settles",
        beats=beats,
        avoid=avoid,
        kind=kind,
        weather=weather,
        details=list(note.details),
        size=target["sizes"][0],
        duration=duration,
    )


def _camera_for(camera: str, subject: str, kind: str) -> str:
    """The persona's camera, pointed at this subject: only a person has a face to be on."""
    if kind == "person":
        return camera
    return re.sub(r"\b(?:a|the) (?:human |real )?face\b|\b(?:a|the) person\b", subject, camera)


def _action_beat(idea: Idea, subject: str, kind: str, mood: str) -> str:
    """What the subject does, in the draft's own words: never the idea pasted as typed."""
    how = "suddenly" if re.search(r"urgent|kinetic|dread|confident", mood) else "slowly"
    if idea.action and subject == idea.subject:
        return f"{subject} {how} {idea.action}"
    if idea.action:  # a teammate changed the subject: it does what the old one did
        return f"{subject} {how} {idea.action}"
    if kind == "thing":
        return f"{subject} sits still as the light moves slowly across it"
    return f"{subject} pauses, then moves on with quiet purpose"


# ---- must-haves: what a persona insists on, and how a draft meets it --------------------


@dataclass(frozen=True)
class Need:
    """One kind of must-have: how to recognise it, ask for it, hear it, meet it, check it."""

    id: str
    must_have: str  # pattern matching a persona's must-have sentence
    heard: str  # pattern the Copilot looks for in the persona's message
    ask: Callable[[Shot, dict[str, Any]], str]
    apply: Callable[[Shot, dict[str, Any]], str]  # edits the shot, returns what changed
    # On the prompt text (lower case), the draft, and the persona.
    met: Callable[[str, dict[str, Any], dict[str, Any]], bool]


def _apply_lens(s: Shot, persona: dict[str, Any]) -> str:
    if not re.search(r"\d{2,3} ?mm", s.lens):
        s.lens = "35mm lens"
    if not re.search(r"push|dolly|pull|track|pan|tilt|crane|zoom|orbit", s.camera):
        s.camera = f"{s.camera}, ending in one slow dolly-in"
    return f"a named lens ({s.lens}) and one deliberate move"


def _apply_light_source(s: Shot, persona: dict[str, Any]) -> str:
    source = light_source(s.idea)
    s.light = f"motivated light from {source}, {s.light}"
    return f"the light now comes from {source}"


def _apply_sound_cue(s: Shot, persona: dict[str, Any]) -> str:
    cue = sound_cue(s.idea)
    s.sound = f"{_clean(s.sound.split(';')[0])}; on the final beat, {cue} changes what we saw"
    s.beats[-1] = f"{s.beats[-1]}, and {cue} is heard"
    return f"a sound cue on the final beat: {cue}"


def _apply_palette(s: Shot, persona: dict[str, Any]) -> str:
    named = _HEX.get(s.palette) or "sunflower yellow #FFC83D, coral #FF6F61 and white #FFFFFF"
    s.palette = named
    return f"the palette as exact colours ({named})"


_HEX = {
    "sunflower yellow, coral and clean white": (
        "sunflower yellow #FFC83D, coral #FF6F61 and clean white #FFFFFF"
    ),
}


def _apply_vertical(s: Shot, persona: dict[str, Any]) -> str:
    s.composition = "the subject stays centred in the middle third, so a 9:16 crop keeps it"
    return "a composition that holds in a vertical crop"


def _apply_no_text(s: Shot, persona: dict[str, Any]) -> str:
    for item in ("text or lettering of any kind", "logos or brand names"):
        if item not in s.avoid:
            s.avoid.append(item)
    return "every surface plain and unbranded"


def _apply_face(s: Shot, persona: dict[str, Any]) -> str:
    # Only a person has a face to open on; an animal or a thing is opened on close up.
    i = 1 if s.beats[0].startswith("in the first two seconds") else 0
    if s.kind == "person":
        s.beats[i] = f"the shot opens close on the face of {s.subject}, eyes catching the light"
        return "a human face in the opening shot"
    s.beats[i] = f"the shot opens close on {s.subject}, filling the frame"
    return f"{s.subject} close up in the opening shot"


_HOOKS = {
    "person": "looks into the lens",
    "animal": "freezes and looks into the lens",
    "thing": "catches a sudden flash of light",
}


def _apply_hook(s: Shot, persona: dict[str, Any]) -> str:
    s.beats.insert(0, f"in the first two seconds, {s.subject} {_HOOKS[s.kind]}")
    return "a hook in the first two seconds"


def _apply_still(s: Shot, persona: dict[str, Any]) -> str:
    s.beats[-1] = f"{s.beats[-1]}, and the frame holds still like a photograph"
    return "an ending that holds as a still"


def _apply_available_light(s: Shot, persona: dict[str, Any]) -> str:
    s.light = f"available light only, {s.time}, {s.light}"
    return f"available light only, and the hour stated ({s.time})"


_GESTURES = {
    "person": "wipes a hand on a sleeve without thinking",
    "animal": "shakes out its coat without a glance at the camera",
    "thing": "is nudged by a passing gust, unplanned",
}


def _apply_candid(s: Shot, persona: dict[str, Any]) -> str:
    s.beats.insert(len(s.beats) - 1, f"in an unposed gesture, {s.subject} {_GESTURES[s.kind]}")
    return "one candid, unposed gesture at the centre"


def _apply_avoid_glossy(s: Shot, persona: dict[str, Any]) -> str:
    for item in ("glossy commercial sheen", "staged posing", "studio lighting"):
        if item not in s.avoid:
            s.avoid.append(item)
    return "an avoid list that rules out the glossy, staged look"


def _detail(persona: dict[str, Any]) -> str:
    for must in persona.get("must_haves", []):
        m = re.search(r"concrete detail in frame: (.+)", must)
        if m:
            return m.group(1).strip().rstrip(".")
    words = persona.get("role", "").lower()
    for pattern, detail in _DETAILS:
        if re.search(pattern, words):
            return detail
    return "one small, worn object that has clearly been used for years"


_DETAILS = [
    (r"horror|giallo|thriller", "a tap dripping in the background, every drop audible"),
    (r"chef|cook|baker|food", "flour on the knuckles"),
    (r"weather|rain|storm|cloud", "rain streaking through the lamplight"),
    (r"anime|animat", "wind moving every strand of hair"),
    (r"director|film", "a practical lamp that flickers once"),
    (r"fashion|designer", "a loose thread catching the light"),
    (r"sci-?fi|futur|space", "condensation on a visor"),
    (r"music|jazz|dj", "a foot keeping time"),
    (r"kid|child|teacher|parent", "a shoelace untied"),
]


def _apply_detail(s: Shot, persona: dict[str, Any]) -> str:
    detail = _detail(persona)
    s.details.append(detail)
    return f"the detail you asked for ({detail})"


_TURNS = {
    "person": "{s}'s expression shifts from doubt to quiet resolve",
    "animal": "{s}'s stance shifts from wariness to calm",
    "thing": "the light on {s} shifts from cold to warm",
}


def _apply_turn(s: Shot, persona: dict[str, Any]) -> str:
    s.beats.insert(len(s.beats) - 1, _TURNS[s.kind].format(s=s.subject))
    return "an emotional turn before the last beat"


def _apply_own_words(s: Shot, persona: dict[str, Any]) -> str:
    look = _look(persona)
    s.camera, s.light = look["camera"], look["light"]
    return "camera and light in your own terms"


NEEDS: list[Need] = [
    Need(
        "lens",
        r"lens|focal",
        r"\blens\b|focal length",
        lambda s, p: (
            "Which lens? Name the focal length, and give me one deliberate camera "
            "move, not a wandering one."
        ),
        _apply_lens,
        lambda t, d, p: (
            re.search(r"\b\d{2,3} ?mm\b", t) is not None
            and re.search(r"push|dolly|pull|track|pan|tilt|crane|zoom|orbit", t) is not None
        ),
    ),
    Need(
        "light_source",
        r"light.*source|motivated",
        r"where does the light come from|source in frame",
        lambda s, p: (
            "Where does the light come from? Put the source in frame: "
            f"{light_source(s.idea)} should light this."
        ),
        _apply_light_source,
        lambda t, d, p: "motivated light from" in t,
    ),
    Need(
        "sound_cue",
        r"sound cue",
        r"sound (?:that|cue)|ending needs a sound",
        lambda s, p: (
            "The ending needs a sound that turns it: one cue on the last beat that "
            "changes what we just saw."
        ),
        _apply_sound_cue,
        lambda t, d, p: "on the final beat" in t,
    ),
    Need(
        "palette",
        r"palette|colou?rs",
        r"exact colou?rs|hex|palette",
        lambda s, p: (
            "On-brand means exact. Name the palette as colours our designers can "
            "match, with their hex values."
        ),
        _apply_palette,
        lambda t, d, p: re.search(r"#[0-9a-f]{6}", t) is not None,
    ),
    Need(
        "vertical",
        r"9:16|vertical",
        r"vertical|9:16",
        lambda s, p: (
            "This lives in a vertical feed. Compose it so a 9:16 crop keeps the "
            "subject and the action."
        ),
        _apply_vertical,
        lambda t, d, p: "9:16 crop" in t or _VERTICAL.match(d["size"]) is not None,
    ),
    Need(
        "no_text",
        r"no text|logos|brand names",
        r"no text|no logos|brand names|unbranded",
        lambda s, p: (
            "Nothing written in frame: no text, no logos, no brand names. Tell me "
            "what the surfaces look like instead."
        ),
        _apply_no_text,
        lambda t, d, p: any("brand" in a.lower() for a in d["parts"]["avoid"]),
    ),
    Need(
        "face",
        r"human face|face in the opening",
        r"open on a face|face first|open close on",
        lambda s, p: (
            f"Open on a face. The first thing we see is a person, not {s.place}."
            if s.kind == "person"
            else f"Open close on {s.subject}. The first thing we see is {s.subject}, not {s.place}."
        ),
        _apply_face,
        lambda t, d, p: "opens close on" in " ".join(d["parts"]["action_beats"][:2]).lower(),
    ),
    Need(
        "hook",
        r"hook|first two seconds",
        r"first two seconds|hook",
        lambda s, p: (
            "What happens in the first two seconds? I need a hook there, something "
            "that stops a thumb mid-scroll."
        ),
        _apply_hook,
        lambda t, d, p: "first two seconds" in t,
    ),
    Need(
        "still",
        r"still|ending beat",
        r"hold on it|as a still|launch post",
        lambda s, p: "The last image has to work as a still for the launch post. Hold on it.",
        _apply_still,
        lambda t, d, p: "holds still" in t,
    ),
    Need(
        "available_light",
        r"available light|time of day",
        r"available light|say the hour",
        lambda s, p: "Available light only, and say the hour. What time is it where we are?",
        _apply_available_light,
        lambda t, d, p: "available light only" in t,
    ),
    Need(
        "candid",
        r"candid|unposed|gesture",
        r"unposed|candid|if we weren't there",
        lambda s, p: "Give me one unposed gesture, something they would do if we weren't there.",
        _apply_candid,
        lambda t, d, p: "unposed gesture" in t,
    ),
    Need(
        "avoid_glossy",
        r"avoid|glossy|staged",
        r"gloss|staged",
        lambda s, p: (
            "Rule out the gloss: I want the avoid list to name the commercial sheen, "
            "the staged posing and the studio light."
        ),
        _apply_avoid_glossy,
        lambda t, d, p: "glossy commercial sheen" in d["parts"]["avoid"],
    ),
    Need(
        "detail",
        r"concrete detail",
        r"one detail",
        lambda s, p: f"One detail only I would insist on: {_detail(p)}.",
        _apply_detail,
        lambda t, d, p: _detail(p).lower() in t,
    ),
    Need(
        "turn",
        r"emotional turn",
        r"feeling turn|something has to change",
        lambda s, p: (
            "Where does the feeling turn? Before the last beat, something has to "
            "change in their face."
        ),
        _apply_turn,
        lambda t, d, p: "shifts from" in t,
    ),
    Need(
        "own_words",
        r"camera and light described",
        r"my own terms|the way i would",
        lambda s, p: (
            f"Describe camera and light the way I would: {_look(p)['camera']}; {_look(p)['light']}."
        ),
        _apply_own_words,
        lambda t, d, p: True,
    ),
]
_BY_ID = {n.id: n for n in NEEDS}


# Needs a target cannot meet: a persona does not ask a silent model for a sound cue.
_SILENT_NEEDS = frozenset({"sound_cue"})


def persona_needs(persona: dict[str, Any], target: dict[str, Any]) -> list[Need]:
    """The needs behind a persona's must-haves, in their order, one per must-have, minus
    those the target cannot meet."""
    out: list[Need] = []
    for must in persona.get("must_haves", []):
        for n in NEEDS:
            if re.search(n.must_have, must, re.I) and n not in out:
                out.append(n)
                break
    if target.get("audio", "none") == "none":
        out = [n for n in out if n.id not in _SILENT_NEEDS]
    return out


# Polish a persona asks for when the round budget has room, after its must-haves.
def _polish(max_rounds: int) -> int:
    return min(2, max(0, (max_rounds - 1) // 5))


POLISH_ASKS = [
    (
        "tighten",
        "Cut the clutter: three beats at most, each one a thing the camera can see.",
        r"cut the clutter|three beats",
    ),
    (
        "duration",
        "Give it room to breathe: take the longer duration.",
        r"room to breathe|longer duration",
    ),
]


# ---- from the history to the current shot -----------------------------------------------


def _heard_needs(history: list[dict[str, str]]) -> tuple[list[str], list[dict[str, str]]]:
    """The needs the persona has raised and the teammates' notes, in the order heard."""
    ids: list[str] = []
    notes: list[dict[str, str]] = []
    for h in history:
        if h["speaker"] == "persona":
            # Only the objection: the answers to the Copilot's questions ask for nothing.
            low = re.sub(r"to your questions:[^.]*\.", "", h["text"].lower())
            for n in NEEDS:
                if re.search(n.heard, low) and n.id not in ids:
                    ids.append(n.id)
                    break
            else:
                for pid, _, heard in POLISH_ASKS:
                    if re.search(heard, low) and pid not in ids:
                        ids.append(pid)
                        break
        elif h["speaker"] == "human":
            notes.append(h)
    return ids, notes


@dataclass
class NoteChange:
    """What teammates' notes change in the shot: each set field overrides the idea or the
    persona's look; details add to the frame."""

    time: str = ""
    weather: str = ""
    place: str = ""
    subject: str = ""
    camera: str = ""
    sound: str = ""
    mood: str = ""
    details: list[str] = field(default_factory=list)

    def merged(self, later: NoteChange) -> NoteChange:
        out = NoteChange(details=[*self.details, *later.details])
        for name in ("time", "weather", "place", "subject", "camera", "sound", "mood"):
            setattr(out, name, getattr(later, name) or getattr(self, name))
        return out


_WEATHER_WORDS = [
    (r"\bstorm|thunder|lightning", "in a storm"),
    (r"\brain", "in steady rain"),
    (r"\bsnow", "under falling snow"),
    (r"\bfog|\bmist", "in low fog"),
    (r"\bwind", "in a strong wind"),
]
# One camera move each, so a note never breaks the target's one-move rule.
_CAMERA_WORDS = [
    (r"hand-?held", "handheld, close to the subject, one slow step in"),
    (r"drone|aerial|bird'?s[- ]eye", "high aerial view, one slow descent"),
    (r"overhead|top-?down", "top-down overhead frame, one slow rotation"),
    (r"close[- ]?up|closer|tighter", "tight close-up, one slow push-in"),
    (r"\bwide\b|\bwider\b", "wide frame, one slow lateral track"),
    (r"static|locked[- ]off|tripod", "locked-off frame on a tripod that never moves"),
    (r"\bdolly", "eye-level frame, one slow dolly-in"),
    (r"\bcrane", "low frame, one slow crane up"),
    (r"\btrack|\bfollow", "tracking alongside the subject at walking pace"),
]
_NEW_SUBJECT = re.compile(
    r"\b(?:make (?:it|the subject|him|her|them)|make the \w+|swap in|replace (?:the|a|an) \w+ "
    r"with|instead of (?:the|a|an) \w+,?|what about|how about|try)\s+"
    r"((?:a|an|the|two|three|some)\s+[a-z][a-z-]*(?:\s+[a-z][a-z-]*){0,2})",
    re.I,
)
_STOP_AFTER = frozenset("instead please at in on with and but or for to".split())


def _note_subject(text: str) -> str:
    """A new subject a note asks for ("make it a heron", "what about two old sailors")."""
    m = _NEW_SUBJECT.search(text)
    if not m:
        return ""
    words: list[str] = []
    for w in m.group(1).split():
        if w.lower() in _STOP_AFTER:
            break
        words.append(w.lower())
    head = words[-1] if len(words) > 1 else ""
    if not head or head in _WEATHER or time_of(head) or head in ("version", "shot", "bit"):
        return ""
    return " ".join(words)


def read_note(text: str, *, audio: bool) -> tuple[NoteChange, list[str]]:
    """What a teammate's note changes, and how to say each change, in the order checked:
    time of day, weather, place, subject, camera, sound, pace; else its noun phrase joins
    the frame as a detail."""
    low = text.lower()
    change = NoteChange()
    said: list[str] = []
    change.time = time_of(low)
    if change.time:
        said.append(f"now {change.time}")
    weather = [phrase for pattern, phrase in _WEATHER_WORDS if re.search(pattern, low)][:2]
    if weather:
        change.weather = " and ".join(weather)
        said.append(change.weather)
        if re.search(r"\b(?:glass|window|windscreen|windshield)", low) and "rain" in low:
            change.details.append("rain running down the glass")
            said.append("rain on the glass")
    subject = _note_subject(text)
    if subject and subject.split()[-1] in PLACES:
        change.place, subject = subject, ""
    note = read_idea(text)
    if not change.place and note.place:
        change.place = note.place
    if change.place:
        said.append(f"now in {change.place}")
    if subject:
        change.subject = subject
        said.append(f"{subject} is the subject now")
    camera = next((c for pattern, c in _CAMERA_WORDS if re.search(pattern, low)), "")
    if camera:
        change.camera = camera
        said.append(f"the camera is now {camera}")
    if audio and re.search(r"\bmusic|\bscore", low):
        change.sound = "a spare piano motif under the ambience"
        said.append(change.sound)
    elif audio and re.search(r"\bsilen", low):
        change.sound = "near silence, only the room breathing"
        said.append(change.sound)
    if re.search(r"\bslow(?:er)?\b", low):
        change.mood = "slower, every beat given time"
        said.append(change.mood)
    if not said:
        phrase = next((o for o in note.objects if len(o) > 3), "")
        phrase = re.sub(r"^(?:the|a|an)\s+", "", _clean(phrase))
        if phrase and len(phrase) <= 60 and not re.search(r"[<>]", phrase):
            change.details.append(phrase)
            said.append(f"{phrase} is in the frame")
    return change, said


def current_shot(brief: dict[str, Any]) -> tuple[Shot, list[str], list[str]]:
    """The shot after every change asked for so far: the shot, the persona's changes in
    order, and what each teammate's note changed (one entry per note, "" for none).

    Notes change the shot's ground (time, weather, place, subject, camera) before the
    persona's needs are met on it, so a need that names the hour names the new one."""
    ids, notes = _heard_needs(brief.get("history", []))
    audio = brief["target"].get("audio", "none") != "none"
    merged = NoteChange()
    noted: list[str] = []
    for n in notes:
        change, said = read_note(n["text"], audio=audio)
        merged = merged.merged(change)
        noted.append("; ".join(said))
    shot = _first_shot(brief, merged)
    persona = brief["persona"]
    changes: list[str] = []
    for nid in ids:
        if nid in _BY_ID:
            changes.append(_BY_ID[nid].apply(shot, persona))
        elif nid == "tighten":
            # The plain opening beat goes first; the action and what was asked for stay.
            beats = shot.beats
            if len(beats) > 3 and beats[0].startswith(f"{shot.subject} waits alone"):
                beats = beats[1:]
            shot.beats = [b.replace(" close at hand", " in reach") for b in beats]
            shot.beats[-1] = shot.beats[-1].replace(", held for a breath", "")
            changes.append("three beats, each one a thing the camera sees")
        elif nid == "duration":
            longer = [d for d in brief["target"]["durations"] if d > shot.duration]
            if longer:
                shot.duration = min(longer)
            changes.append(f"{shot.duration} seconds")
    if "vertical" in ids:
        vertical = [z for z in brief["target"]["sizes"] if _VERTICAL.match(z)]
        if vertical:
            shot.size = vertical[0]
    return shot, changes, noted


# ---- laying the shot out for the target ---------------------------------------------------

# Positive statements for avoid items, for targets with no negative prompt field.
_POSITIVE = [
    (r"text|lettering|caption|subtitle", "surfaces are clean and unlettered"),
    (r"logo|brand", "objects are plain and unbranded"),
    (r"hand|face", "hands and faces stay natural and steady"),
    (r"limb|warp|distort", "every shape holds steady and whole"),
    (r"gloss|sheen", "textures stay honest and unretouched"),
    (r"staged|pos", "movement stays natural and unposed"),
    (r"studio", "light comes only from real sources"),
]


def _positives(avoid: list[str]) -> list[str]:
    out: list[str] = []
    for item in avoid:
        for pattern, statement in _POSITIVE:
            if re.search(pattern, item, re.I) and statement not in out:
                out.append(statement)
                break
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _beat_times(n: int, duration: int) -> list[str]:
    edges = [round(duration * i / n) for i in range(n + 1)]
    return [f"{a}-{b} s" for a, b in itertools.pairwise(edges)]


def _plural(phrase: str) -> bool:
    words = phrase.lower().split()
    return bool(words) and (words[0] in ("two", "three", "some") or words[-1].endswith("s"))


def _scene(shot: Shot, *, with_subject: bool) -> list[str]:
    """The scene as sentences: where and when, what is in view, the details asked for."""
    where = f"{shot.place} {shot.time}"
    if with_subject:
        verb = "are" if _plural(shot.subject) else "is"
        out = [f"{_cap(shot.subject)} {verb} in {where}."]
    else:
        out = [f"The scene is {where}."]
    things = [o for o in shot.idea.objects if shot.idea.head(o) not in _WEATHER]
    if things:
        verb = "are" if len(things) > 1 or _plural(things[0]) else "is"
        out.append(f"{_cap(_and(things))} {verb} in view.")
    out += [f"{_cap(_clean(d))} is visible in the frame." for d in shot.details]
    if shot.composition:
        out.append(f"{_cap(shot.composition)}.")
    return out


def render(shot: Shot, target: dict[str, Any]) -> str:
    """`prompt_text` in the target's layout, within its length bounds.

    Every sentence has a subject and a verb; the labelled fields of Sora's cinematography
    block are the vendor's own form. The idea is never pasted as typed: the subject's
    action is said in the draft's words."""
    layout = target.get("layout", "prose")
    audio = target.get("audio", "none") != "none"
    positives = [] if target.get("negative_prompt") else _positives(shot.avoid)
    positive = [f"{_cap(p)}." for p in positives]
    beats = [f"{_cap(_clean(b))}." for b in shot.beats]
    look = f"The look is {_clean(shot.style)}, {_clean(shot.mood)}."
    camera = f"The camera work is {_clean(shot.camera)}, with a {_clean(shot.lens)}."
    light = f"The light is {_clean(shot.light)}, in a palette of {_clean(shot.palette)}."
    sound = f"We hear {_clean(shot.sound)}."
    if layout == "blocks":
        times = _beat_times(len(beats), shot.duration)
        blocks = [
            f"Style: {_clean(shot.style)}, {_clean(shot.mood)}.",
            " ".join([*_scene(shot, with_subject=True), *positive]),
            "Cinematography:\n"
            f"Camera shot: {_clean(shot.camera)}\n"
            f"Lens: {_clean(shot.lens)}\n"
            f"Lighting: {_clean(shot.light)}\n"
            f"Palette: {_clean(shot.palette)}\n"
            f"Mood: {_clean(shot.mood)}",
            "Actions:\n" + "\n".join(f"- {t}: {b}" for t, b in zip(times, beats, strict=True)),
        ]
        if audio:
            blocks.append(f"Sound: {sound}")
        text = "\n\n".join(blocks)
    elif layout == "motion_first":
        # The subject's motion first, then the camera's, then the scene's, then the style.
        main = 1 if len(beats) > 1 else 0
        text = " ".join(
            [
                beats[main],
                camera,
                *_scene(shot, with_subject=False),
                light,
                *(b for i, b in enumerate(beats) if i != main),
                look,
                *positive,
            ]
        )
    elif layout == "shots":
        lines = [" ".join([*_scene(shot, with_subject=False), light, *positive])]
        for i, b in enumerate(beats, 1):
            lines.append(
                f"Shot {i}: {b} " + (f"{camera} {look}" if i == 1 else "The camera holds.")
            )
        if audio:
            lines.append(f"Sound: {sound}")
        text = "\n".join(lines)
    else:
        parts = [*_scene(shot, with_subject=False), *beats, look, camera, light, *positive]
        if audio:
            parts.append(sound)
        text = " ".join(parts)
    return _fit(text, target)


def _fit(text: str, target: dict[str, Any]) -> str:
    """Trim to the target's maximum at a sentence end; pad a too-short prompt with the mood."""
    limit = int(target["prompt_max_chars"])
    if len(text) > limit:
        cut = text[:limit]
        end = max(cut.rfind(". "), cut.rfind(".\n"))
        text = cut[: end + 1] if end > limit // 2 else cut.rstrip()
    return text


def parts_of(shot: Shot, target: dict[str, Any]) -> dict[str, Any]:
    parts: dict[str, Any] = {
        "subject": shot.subject,
        "setting": f"{shot.place} {shot.time}",
        "action_beats": [_cap(_clean(b)) for b in shot.beats],
        "camera": f"{_clean(shot.camera)}, {_clean(shot.lens)}",
        "lighting_palette": f"{_clean(shot.light)}; {_clean(shot.palette)}",
        "style": _clean(shot.style),
        "avoid": list(shot.avoid),
    }
    if target.get("audio", "none") != "none":  # a silent model's schema has no sound field
        parts["sound"] = _clean(shot.sound)
    return parts


def resolution_for(duration: int, target: dict[str, Any]) -> str | None:
    """The draft's resolution where the target has a choice (its schema asks for one): the
    sharpest one legal at `duration` up to 1080p, since 4k costs more for a first cut."""
    choices: list[str] = target.get("resolutions") or []
    if target.get("size_label") == "resolution" or len(choices) < 2:
        return None
    tied: dict[str, list[int]] = target.get("resolution_durations") or {}
    legal = [r for r in choices if duration in tied.get(r, [duration])]
    modest = [r for r in legal if r.lower() not in ("4k", "2160p")]
    return (modest or legal or choices)[-1]


def _title(shot: Shot) -> str:
    words = shot.idea.nouns[:3]
    base = " ".join(words).title() if words else "Untitled"
    return base[:60]


def draft_of(shot: Shot, target: dict[str, Any]) -> dict[str, Any]:
    draft: dict[str, Any] = {
        "title": _title(shot),
        "prompt_text": render(shot, target),
        "duration_seconds": shot.duration,
        "size": shot.size,
        "parts": parts_of(shot, target),
    }
    resolution = resolution_for(shot.duration, target)
    if resolution is not None:
        draft["resolution"] = resolution
    return draft


# ---- the Copilot -------------------------------------------------------------------------


def _copilot(brief: dict[str, Any]) -> dict[str, Any]:
    persona = brief["persona"]
    target = brief["target"]
    latest = brief.get("latest_draft")
    shot, changes, noted = current_shot(brief)
    idea = shot.idea
    if latest is None:
        greet = f"{persona['display_name'].split()[0]}, "
        obj = idea.objects[0] if idea.objects else "that moment"
        message = _cap(
            f"{greet}here is a first pass at {idea.subject} in {shot.place}. Two "
            f"questions before we polish: what should the viewer feel when {obj} first "
            f"appears, and which single image should they remember? I started with "
            f"{_clean(shot.camera)} and {_clean(shot.light)}."
        )
    else:
        fresh = changes[-1:] if changes else []
        said = "; ".join(fresh) if fresh else "the beats tightened"
        draft = draft_of(shot, target)
        same = all(
            latest[k] == draft[k]
            if k != "parts"
            else all(latest["parts"].get(pk) == pv for pk, pv in draft["parts"].items())
            for k in draft
        )
        if same:
            message = f"v{latest['version']} already has that; I would not change it."
        else:
            message = f"v{latest['version'] + 1}: {said}."
    _, notes = _heard_needs(brief.get("history", []))
    pending = {h["text"] for h in _pending_humans(brief)}
    answered = {h["text"] for h in _answered_humans(brief)}
    for note, change in zip(notes, noted, strict=True):
        if note["text"] in pending:
            taken = f"taken: {change}" if change else "heard; it does not change the frame"
            message += f" {note['author']}, {taken}."
        elif note["text"] in answered and change:
            # Already answered by the persona: say only what it changed in the plan.
            message += f" {note['author']}'s note is in this draft: {change}."
    if brief["round"] >= brief["max_rounds"]:
        message += " This is my final draft."
    return {"message": message, "draft": draft_of(shot, target)}


def _pending_humans(brief: dict[str, Any]) -> list[dict[str, str]]:
    """Interjections after the last agent turn: this speaker is the one to answer them."""
    out: list[dict[str, str]] = []
    for h in reversed(brief.get("heard", [])):
        if h["speaker"] != "human":
            break
        out.insert(0, h)
    return out


def _answered_humans(brief: dict[str, Any]) -> list[dict[str, str]]:
    """Interjections since this speaker's last turn that the other agent already answered."""
    pending = _pending_humans(brief)
    return [h for h in brief.get("heard", []) if h["speaker"] == "human" and h not in pending]


# ---- the persona ---------------------------------------------------------------------------

_OPENERS = {
    "director": ["Closer.", "Better, but the camera is still guessing.", "Nearly."],
    "founder": ["Okay, gut check.", "Getting there.", "Almost."],
    "brand": ["Good energy, but not on-brand yet.", "Better.", "So close."],
    "photographer": ["It still feels arranged.", "Less staged now.", "Nearly honest."],
}
_APPROVALS = {
    "director": "v{v} is the shot. Lock it.",
    "founder": "v{v}. That first second works. Ship it.",
    "brand": "v{v} is on-brand. Lock it.",
    "photographer": "v{v} feels observed, not staged. Lock it.",
}


def _unmet(brief: dict[str, Any], draft: dict[str, Any]) -> list[str]:
    """The persona's needs the draft's prompt does not meet yet, in must-have order."""
    low = draft["prompt_text"].lower()
    persona = brief["persona"]
    needs = persona_needs(persona, brief["target"])
    return [n.id for n in needs if not n.met(low, draft, persona)]


def _persona(brief: dict[str, Any], hold: int | None) -> dict[str, Any]:
    persona = brief["persona"]
    latest = brief.get("latest_draft")
    revisions: int = brief.get("persona_revisions", 0)
    final = brief["round"] >= brief["max_rounds"]
    key = persona.get("name", "custom")
    humans = _pending_humans(brief)
    replies = "".join(f" {h['author']}, noted: keep it if it serves the ending." for h in humans)
    if latest is None:
        return {
            "message": "Show me a draft first; I react better to pictures than to plans." + replies,
            "verdict": {"decision": "revise", "version": None},
        }
    shot, _, _ = current_shot(brief)
    unmet = _unmet(brief, latest)
    ids, _ = _heard_needs(brief.get("history", []))
    longer = any(d > latest["duration_seconds"] for d in brief["target"]["durations"])
    polish_left = [
        (pid, ask)
        for pid, ask, _ in POLISH_ASKS[: _polish(brief["max_rounds"])]
        if pid not in ids and (pid != "duration" or longer)
    ]
    pushed = brief["pushed_back"]
    satisfied = pushed and not unmet and not polish_left
    held = hold is not None and revisions < hold
    if (satisfied and not held) or (final and pushed):
        template = _APPROVALS.get(key, "v{v} is what I had in mind. Lock it.")
        return {
            "message": template.format(v=latest["version"]) + replies,
            "verdict": {"decision": "approve", "version": latest["version"]},
        }
    openers = _OPENERS.get(key) or [
        "Not yet.",
        "Closer, but not there.",
        "Nearly.",
    ]
    opener = openers[min(revisions, len(openers) - 1)]
    answer = ""
    if revisions == 0:
        # The Copilot's opening asked what the viewer should feel and what to remember.
        mood = _look(persona)["mood"]
        things = [o for o in shot.idea.objects if shot.idea.head(o) not in _WEATHER]
        keep = f"{shot.subject} with {things[-1]}" if things else shot.subject
        answer = (
            f" To your questions: they should feel {_clean(mood)}; the image to keep is {keep}."
        )
    if unmet:
        ask = _BY_ID[unmet[0]].ask(shot, persona)
    elif polish_left:
        ask = polish_left[0][1]
    else:
        ask = "Cut the clutter: three beats at most, each one a thing the camera can see."
    return {
        "message": f"{opener}{answer} {ask}{replies}",
        "verdict": {"decision": "revise", "version": None},
    }
