"""What the offline model answers to a free-text persona's sheet request.

The sheet request (`bot.dialogue.sheets`) asks a model to write a persona from a
teammate's words; a real model answers with the sheet's JSON, and so does this
module, offline, from the words alone. It lives beside the offline model, not with the
personas, so that nothing in `bot.llm` imports `bot.dialogue` (the dialogue calls
models, never the other way round); its output goes through the same schema and
cleaning as a real model's.
"""

from __future__ import annotations

import re
import zlib


def clean(text: str) -> str:
    """Runs of whitespace made one space. The description arrives cleaned of control
    characters and bidi overrides already (`bot.dialogue.profiles.resolve_persona`)."""
    return " ".join(text.split())


# Words a free-text persona may use, and what each does to a shot. The first word that
# sets a field wins; fields no word sets come from a base look chosen by the words' hash,
# so the same description always gives the same taste.
_LOOK_WORDS: list[tuple[str, dict[str, str]]] = [
    (
        r"horror|giallo|thriller|noir",
        {
            "camera": "slow creeping zoom from a low angle",
            "light": "hard single-source light with deep shadow",
            "palette": "blood red, sickly green and black",
            "mood": "dread, held breath",
        },
    ),
    (
        r"19[2-7]0s|seventies|vintage|retro|super ?8|analog",
        {
            "lens": "vintage zoom lens with soft edges",
            "style": "period film stock with heavy grain",
        },
    ),
    (
        r"italian|french|european",
        {
            "style": "European art-house framing, composed like a painting",
        },
    ),
    (
        r"anime|animat|cartoon|pixar|stop[- ]motion|claymation",
        {
            "style": "hand-crafted animation with visible texture",
            "camera": "locked-off frame with one expressive push-in",
            "palette": "saturated primaries against soft pastels",
        },
    ),
    (
        r"documentar|journalist|reporter|ethnograph",
        {
            "camera": "handheld, following at a respectful distance",
            "light": "available light only",
            "style": "observational documentary realism",
        },
    ),
    (
        r"music video|dj|rapper|pop star|band",
        {
            "camera": "kinetic orbit around the performer",
            "light": "coloured stage light and strobes",
            "palette": "electric magenta, cyan and chrome",
            "sound": "a driving beat with a drop on the final cut",
        },
    ),
    (
        r"chef|food|cook|baker|restaurant",
        {
            "camera": "top-down macro, then one slow slide along the counter",
            "light": "warm window light raking across surfaces",
            "palette": "copper, flour white and herb green",
            "sound": "sizzle, knife on wood, a kettle's rising note",
        },
    ),
    (
        r"nature|wildlife|outdoor|explorer|climber|surfer|hiker",
        {
            "camera": "long lens from a distance, one patient pan",
            "light": "raw natural light, weather as it comes",
            "palette": "moss green, slate grey and sky blue",
            "sound": "wind, water and distant birds",
        },
    ),
    (
        r"fashion|luxury|designer|perfume|jewel",
        {
            "camera": "slow glide past the subject in profile",
            "light": "sculpted soft key with a clean rim",
            "palette": "champagne gold, ivory and deep black",
            "style": "glossy editorial elegance",
        },
    ),
    (
        r"sci-?fi|futur|cyberpunk|space|astronaut|robot",
        {
            "camera": "slow crane up to reveal scale",
            "light": "cool neon and practical screens",
            "palette": "cyan, violet and gunmetal",
            "style": "sleek speculative realism",
        },
    ),
    (
        r"teacher|kid|child|family|parent|grandm|grandp",
        {
            "camera": "eye level at the child's height, one gentle push-in",
            "light": "soft afternoon window light",
            "palette": "butter yellow, leaf green and warm wood",
            "mood": "tender and playful",
        },
    ),
    (
        r"architect|engineer|designer|minimalis",
        {
            "camera": "symmetrical frame, one precise lateral dolly",
            "lens": "wide rectilinear lens, everything sharp",
            "palette": "concrete grey, white and one accent colour",
        },
    ),
    (
        r"wes anderson|symmetr|whimsical|quirky",
        {
            "camera": "dead-centre symmetrical framing, one whip pan",
            "palette": "pastel pink, mint and mustard",
            "style": "storybook precision",
        },
    ),
]
_BASE_LOOKS: list[dict[str, str]] = [
    {
        "camera": "steady medium shot, one slow push-in",
        "lens": "35mm lens",
        "light": "soft directional daylight",
        "palette": "warm neutrals with one saturated accent",
        "style": "grounded cinematic realism",
        "sound": "natural ambience and one clear sound cue",
        "mood": "curious, intimate",
    },
    {
        "camera": "wide establishing frame, one slow lateral track",
        "lens": "24mm lens, deep focus",
        "light": "golden low sun with long shadows",
        "palette": "amber, dusty rose and deep teal",
        "style": "lyrical, painterly realism",
        "sound": "wind and a low sustained note",
        "mood": "wistful, open",
    },
    {
        "camera": "close, handheld, breathing with the subject",
        "lens": "50mm lens, shallow focus",
        "light": "mixed practical light at night",
        "palette": "sodium orange, cold blue and black",
        "style": "gritty, intimate realism",
        "sound": "close breath and city hum",
        "mood": "urgent, private",
    },
    {
        "camera": "locked-off tableau, one slow tilt up at the end",
        "lens": "40mm lens, moderate depth",
        "light": "overcast soft light, no hard shadows",
        "palette": "sage, cream and charcoal",
        "style": "calm, composed minimalism",
        "sound": "near silence, one small sound that lands",
        "mood": "still, reflective",
    },
]


def derive_look(spec: str) -> dict[str, str]:
    """A taste for a free-text persona, read from its own words (the sheet's `look`)."""
    low = spec.lower()
    base = _BASE_LOOKS[zlib.crc32(low.encode()) % len(_BASE_LOOKS)]
    fields: dict[str, str] = {}
    for pattern, look in _LOOK_WORDS:
        if re.search(pattern, low):
            for k, v in look.items():
                fields.setdefault(k, v)
    return {**base, **fields}


# ---- the offline sheet: a free-text persona written from its own words ------------------
#
# What the offline model answers to the sheet request (`bot.dialogue.sheets`): the same
# fields a real model writes, chosen by the description's words (the first table row whose
# words it uses), the rest by the words' hash. Different descriptions meet different people
# with different must-haves, and so end with different prompts. Each must-have is written
# so that the offline model recognises it (`bot.llm.offline.NEEDS`) and can meet it.

_MUSTS = {
    "lens": "a named focal length and one deliberate camera move",
    "light_source": "motivated light with its source visible in frame",
    "sound_cue": "a sound cue on the final beat that changes what we saw",
    "palette": "the palette named as two or three exact colours",
    "vertical": "a composition that survives a vertical 9:16 crop",
    "no_text": "no text, logos or brand names anywhere in frame",
    "hook": "one unmistakable hook in the first two seconds",
    "still": "a final image that holds as a still",
    "available_light": "available light only, with the time of day stated",
    "candid": "one candid, unposed gesture at the centre",
    "avoid_glossy": "an avoid list that rules out glossy, staged looks",
    "detail": "one concrete detail in frame: {detail}",
}
# (words, must-haves in order, voice, taste, pet peeves)
_KINDS: list[tuple[str, list[str], str, str, list[str]]] = [
    (
        r"journalist|reporter|documentar|photojournal|investigat",
        ["available_light", "detail", "avoid_glossy"],
        "Blunt and exacting, in short sentences. Asks what a shot proves and where the "
        "evidence is; distrusts every adjective.",
        "Real places, real work, real wear; nothing that flatters the subject.",
        ["imagery that looks virtuous and proves nothing", "a staged 'candid' moment"],
    ),
    (
        r"horror|thriller|noir|giallo|suspense",
        ["light_source", "sound_cue", "detail"],
        "Soft-spoken and exact. Talks about what the audience has not seen yet, and about "
        "where the dark is.",
        "Dread that builds in stillness; one hard light; the frame as a trap.",
        ["a jump scare with nothing behind it", "fog used to hide a weak idea"],
    ),
    (
        r"chef|food|cook|baker|restaurant|pastry",
        ["detail", "light_source", "lens"],
        "Warm and impatient. Talks in textures and temperatures; wants to smell the shot.",
        "Hands at work, steam, crumbs, the mess that proves it is real.",
        ["food that looks plastic", "a spotless counter no one has cooked on"],
    ),
    (
        r"brand|marketing|advertis|campaign|fashion|luxury|retail",
        ["palette", "no_text", "vertical"],
        "Crisp and upbeat. Maps every choice to the audience and the channel.",
        "Bright, confident colour; one clear product moment without a hard sell.",
        ["a product shot that upstages the people", "clutter in the corners of the frame"],
    ),
    (
        r"founder|startup|ceo|entrepreneur|product|tech|investor",
        ["hook", "still", "palette"],
        "Direct and fast. Thinks in launch moments and first seconds; asks what the viewer "
        "feels at once.",
        "Optimistic, clean, one bold idea per shot.",
        ["a slow opening that loses the scroll", "gadgets that upstage the idea"],
    ),
    (
        r"director|film|cinematograph|editor|auteur",
        ["lens", "light_source", "sound_cue"],
        "Quiet and stubborn. Talks in lenses, blocking and cuts.",
        "Long takes, practical light, restraint.",
        ["a camera that moves because it can", "light with no source"],
    ),
    (
        r"music|dj|band|rapper|singer|composer",
        ["hook", "sound_cue", "palette"],
        "Loose and rhythmic. Counts beats out loud; hears a cut before seeing it.",
        "Motion cut to rhythm, colour that pulses, one drop that lands.",
        ["a cut that ignores the beat", "colour without energy"],
    ),
    (
        r"teacher|kid|child|parent|family|grandm|grandp",
        ["candid", "still", "light_source"],
        "Gentle and plain-spoken. Asks what a child would notice first.",
        "Small, true moments at a child's height; warmth without sugar.",
        ["adults performing for the camera", "sentiment laid on with music"],
    ),
    (
        r"nature|wildlife|outdoor|explorer|climber|surfer|hiker|ecolog|sustainab|climate",
        ["available_light", "lens", "still"],
        "Patient and dry. Waits for the moment and says so.",
        "Weather as it comes, long lenses, animals and land left alone.",
        ["nature posed like a postcard", "a drone shot for its own sake"],
    ),
    (
        r"architect|engineer|designer|minimalis|urban",
        ["lens", "palette", "light_source"],
        "Precise and spare. Talks in lines, materials and proportion.",
        "Symmetry, honest materials, light that shows the structure.",
        ["a crooked horizon", "decoration that hides the structure"],
    ),
    (
        r"sci-?fi|futur|cyberpunk|space|astronaut|robot",
        ["light_source", "lens", "palette"],
        "Curious and technical. Asks how the world works before how it looks.",
        "Scale, machinery that looks used, light from screens and instruments.",
        ["chrome with no wear on it", "a future with no one in it"],
    ),
    (
        r"anime|animat|cartoon|pixar|stop[- ]motion|claymation|illustrat",
        ["palette", "hook", "detail"],
        "Playful and exact. Sketches while talking; names every colour.",
        "Clear shapes, expressive motion, texture you could touch.",
        ["stiff motion", "a muddy palette"],
    ),
]
_VOICES = [
    "Plain-spoken and specific. Asks for one change at a time and says why it matters.",
    "Dry and exacting. Repeats the one thing that is still wrong until it is fixed.",
    "Warm but firm. Describes what they want to see, never what they want to feel.",
    "Fast and decisive. Trusts the first instinct and cuts everything else.",
]
_TASTES = [
    "Honest light, real texture and one image worth remembering.",
    "Restraint: fewer things in frame, each one chosen.",
    "Bold colour and clear motion; nothing muddy.",
    "Stillness, then one movement that matters.",
]
_PEEVES = [
    "slow motion for no reason",
    "lens flare as decoration",
    "everyone smiling at nothing",
    "a camera that never settles",
    "stock-footage sunsets",
]
_FIRST = (
    "Ines Amara Jonah Mirela Tobias Noor Keiko Rafael Selin Dario Hana Callum Zofia Emeka "
    "Lucia Arjun"
).split()
_LAST = (
    "Duarte Whitlock Sato Okonkwo Brandt Haddad Lindgren Moreau Castellanos Petrov Nakamura "
    "Adeyemi Kowalski Farrow Rinaldi Mehta"
).split()
_ALL_MUSTS = list(_MUSTS)


def _role(description: str) -> str:
    """The description as a role: its leading article dropped, its case as typed."""
    # Markup typed in the description (`<!channel>`, a link) is not part of a role.
    words = clean(re.sub(r"<[^>]*>|[<>]|https?://\S+|www\.\S+", " ", description))
    role = re.sub(r"(?i)^(?:a|an|the)\s+", "", words).strip(" .")
    return role[:100].rstrip() or "creative lead"


def sheet_from_words(description: str) -> dict[str, object]:
    """A persona sheet (the `bot.dialogue.sheets` schema's JSON) from a description's words."""
    low = clean(description).lower()
    h = zlib.crc32(low.encode())
    look = derive_look(description)
    kind = next((k for k in _KINDS if re.search(k[0], low)), None)
    order = _ALL_MUSTS[h % len(_ALL_MUSTS) :] + _ALL_MUSTS[: h % len(_ALL_MUSTS)]
    chosen = list(kind[1]) if kind else []
    for need in order:
        if len(chosen) >= 3:
            break
        if need not in chosen:
            chosen.append(need)
    detail = _DETAIL_WORDS.get(next((w for w in _DETAIL_WORDS if w in low), ""), "")
    detail = detail or _DEFAULT_DETAILS[h % len(_DEFAULT_DETAILS)]
    musts = [_MUSTS[n].format(detail=detail) for n in chosen]
    peeves = list(kind[4]) if kind else []
    peeves.append(_PEEVES[(h >> 4) % len(_PEEVES)])
    return {
        "name": f"{_FIRST[h % len(_FIRST)]} {_LAST[(h >> 8) % len(_LAST)]}",
        "role": _role(description),
        "voice": kind[2] if kind else _VOICES[(h >> 12) % len(_VOICES)],
        "taste": kind[3] if kind else _TASTES[(h >> 16) % len(_TASTES)],
        "look": look,
        "must_haves": musts,
        "pet_peeves": peeves[:3],
    }


# The concrete detail a free-text persona insists on, by a word of its description.
_DETAIL_WORDS = {
    "journalist": "a receipt or price tag that tells the real cost",
    "reporter": "a receipt or price tag that tells the real cost",
    "greenwash": "an exhaust vent or waste pipe just out of the brochure's frame",
    "sustainab": "an exhaust vent or waste pipe just out of the brochure's frame",
    "horror": "a tap dripping in the background",
    "giallo": "a black-gloved hand on a door frame",
    "chef": "flour on the knuckles",
    "pastry": "flour on the knuckles",
    "baker": "flour on the knuckles",
    "kid": "a shoelace untied",
    "child": "a shoelace untied",
    "teacher": "chalk dust on a sleeve",
    "space": "condensation on a visor",
    "sci": "condensation on a visor",
    "fashion": "a loose thread catching the light",
    "jazz": "a foot keeping time",
    "music": "a foot keeping time",
    "anime": "wind moving every strand of hair",
}
_DEFAULT_DETAILS = [
    "one small, worn object that has clearly been used for years",
    "a chipped mug on the nearest surface",
    "a coat hung on the back of a chair",
    "a hand-written note pinned at eye level",
]
