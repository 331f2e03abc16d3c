"""Reading an idea without a language model: its subject, place, time of day and objects.

A small, deterministic reader for the offline model. It knows a few hundred common
verbs, prepositions, places and times of day, and chunks the idea into noun phrases
between them. It is wrong sometimes, never random: the same idea reads the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DETERMINERS = frozenset(
    "a an the his her their its my our your some this that these those every each".split()
)
_NUMBERS = frozenset("one two three four five six seven eight nine ten".split())
_PREPOSITIONS = frozenset(
    """
    in at on inside into onto across through under beneath beside near by along atop above
    over from to toward towards around behind between among past down up off out of for
    with without after before during until within against beyond via
    """.split()
)
_CONJUNCTIONS = frozenset("and but or while as when who whom which that then so because".split())
_AUXILIARIES = frozenset(
    "is are was were be been being has have had do does did can could will would may might "
    "must should shall gets got gonna".split()
)
_VERB_BASES = """
    find walk run race open discover wait watch dance cook build carry climb read write look
    sit stand drive ride fly swim fall hold hand meet play sing paint fix repair launch pour
    light catch throw chase cross return leave enter wake sleep drink eat sell buy search hide
    sail row push pull lift drop kiss hug cry laugh smile turn teach learn plant grow pick
    deliver unbox test try show reveal become feed wash sweep knit sew bake brew serve pack
    load float drift glow burn melt shine rise spin jump skate surf ski hike film shoot
    photograph record practice practise rehearse train tend guard keep mend stitch craft
    sculpt carve pilot steer drag wander roam explore unveil present pitch greet wave answer
    call text send receive open close lock unlock press tap type scroll stare gaze notice spot
    hear listen whisper shout speak talk argue pray kneel bow fold unfold tear burn bury dig
    water harvest gather collect count sort stack arrange decorate celebrate prepare plan
    escape follow lead dive leap climb crawl stumble tumble slip balance juggle perform
    compose conduct rescue protect save share trade swap swap bring take give make get see
    end stay carry shift come hang flicker rake shimmer stream drip look stop shake rest
    settle breathe use work
    """.split()
_IRREGULAR = frozenset(
    """
    found ran rode flew swam fell held met sang caught threw left woke slept drank ate sold
    bought hid sat stood drove wrote built became fed taught grew shone rose spun shot lit
    brought took gave made saw heard told thought knew began begun swept dug tore
    """.split()
)


def _forms(base: str) -> set[str]:
    out = {base, base + "s", base + "ed", base + "ing"}
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        out.add(base + "es")
    if base.endswith("e"):
        out |= {base + "d", base[:-1] + "ing"}
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        out |= {base[:-1] + "ies", base[:-1] + "ied"}
    if re.fullmatch(r"[^aeiou]*[aeiou][bdgmnprt]", base):
        out |= {base + base[-1] + "ing", base + base[-1] + "ed"}
    return out


VERBS = frozenset(set().union(*(_forms(b) for b in _VERB_BASES)) | _IRREGULAR)
# Words the offline reader takes as a verb even though they are nouns too ("light", "film",
# "plant"...) only after a subject has started; see `read_idea`.

TIMES: list[tuple[str, str]] = [
    ("golden hour", "at golden hour"),
    ("blue hour", "at blue hour"),
    ("sunrise", "at sunrise"),
    ("dawn", "at dawn"),
    ("daybreak", "at daybreak"),
    ("morning", "in the early morning"),
    ("noon", "at noon"),
    ("midday", "at midday"),
    ("afternoon", "in the late afternoon"),
    ("sunset", "at sunset"),
    ("dusk", "at dusk"),
    ("twilight", "at twilight"),
    ("evening", "in the evening"),
    ("midnight", "at midnight"),
    ("night", "at night"),
]
_TIME_WORDS = frozenset(w for k, _ in TIMES for w in k.split()) | {"tonight", "today"}

PLACES = frozenset(
    """
    lighthouse kitchen street city forest beach desert station office rooftop roof market
    harbour harbor port ocean sea mountain room garden cafe café bar studio factory library
    subway train airport field lake river island village school classroom hospital church
    temple alley bridge park apartment house home shop store lab laboratory ship boat deck
    stage theater theatre arena stadium gym pool bathroom bedroom attic basement garage
    barn farm vineyard orchard meadow valley canyon cliff cave glacier tundra jungle swamp
    marsh dock pier wharf shore coast highway road diner restaurant bakery warehouse
    workshop greenhouse observatory museum gallery courtyard plaza square corridor hallway
    stairwell elevator tunnel platform terminal hangar launchpad orbit space planet moon
    city skyline neighborhood neighbourhood town laundromat arcade cinema hotel motel
    """.split()
)
LIGHT_SOURCES = {
    "lighthouse": "the lighthouse lamp turning overhead",
    "lamp": "the lamp in frame",
    "lantern": "the lantern in frame",
    "candle": "the candle flame in frame",
    "fire": "the fire in frame",
    "window": "the window in frame",
    "screen": "the glowing screen in frame",
    "neon": "the neon sign in frame",
    "torch": "the torch in frame",
    "station": "the platform lamps in frame",
    "street": "a street lamp in frame",
    "kitchen": "the window over the sink",
    "stage": "a single spotlight in frame",
    "bar": "the bar's pendant lamps in frame",
    "diner": "the diner's neon in frame",
    "studio": "the work lamp in frame",
    "workshop": "the work lamp in frame",
    "beach": "the low sun in frame",
    "sea": "the low sun on the water",
    "ocean": "the low sun on the water",
    "forest": "sun shafts through the trees",
}
SOUND_CUES = {
    "bottle": "the soft pop of a cork",
    "letter": "paper unfolding",
    "message": "paper unfolding",
    "note": "paper unfolding",
    "piano": "one sustained piano note fading out",
    "song": "the last note left hanging",
    "boat": "water lapping at the hull",
    "boats": "water lapping against paper",
    "storm": "the last drip from a gutter",
    "rain": "the last drip from a gutter",
    "door": "a door clicking shut",
    "phone": "a single phone buzz",
    "clock": "one tick, then silence",
    "bell": "a single bell",
    "train": "a distant train horn",
    "bird": "a single bird call",
    "dog": "a dog's bark far off",
    "coffee": "a cup set down on a saucer",
    "robot": "a soft servo whir",
    "wave": "a wave breaking",
    "sea": "a wave breaking",
    "kettle": "a kettle's rising whistle",
}


@dataclass(frozen=True)
class Idea:
    """What an idea is about, in phrases taken from its own words."""

    text: str
    subject: str  # "a lighthouse keeper"
    action: str  # "finds a message in a bottle"
    place: str  # "a lighthouse", "" when the idea names none
    time: str  # "at dawn", "" when the idea names none
    objects: list[str] = field(default_factory=list)  # "a message", "a bottle"

    @property
    def nouns(self) -> list[str]:
        """Head nouns of the subject, place and objects, in that order."""
        out: list[str] = []
        for phrase in (self.subject, self.place, *self.objects):
            for w in phrase.lower().split():
                w = w.strip(".,'’")
                if w and w not in _DETERMINERS and w not in _NUMBERS and w not in out:
                    out.append(w)
        return out

    def head(self, phrase: str) -> str:
        words = phrase.split()
        return words[-1].lower() if words else ""


def _tokens(idea: str) -> list[str]:
    return re.findall(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'’-]*|\d+|[,.;:!?—–()]", idea)


def _strip_det(words: list[str]) -> list[str]:
    while words and words[0].lower() in _DETERMINERS:
        words = words[1:]
    return words


def time_of(idea: str) -> str:
    low = idea.lower()
    for key, phrase in TIMES:
        if re.search(rf"\b{key}\b", low):
            return phrase
    return ""


def _verb_at(lows: list[str], i: int) -> bool:
    """True when word i reads as a verb: a known verb form not used as a noun here."""
    w = lows[i]
    if w in _AUXILIARIES:
        return True
    return w in VERBS and w not in PLACES and lows[i - 1] not in _DETERMINERS


def read_idea(idea: str) -> Idea:
    """Subject, action, place, time and objects of `idea`, from its own words."""
    toks = _tokens(idea.strip())
    lows = [t.lower() for t in toks]
    # The subject runs to the first verb (or preposition, conjunction, punctuation).
    v = next(
        (i for i, w in enumerate(lows) if i > 0 and _verb_at(lows, i)),
        None,
    )
    stop = next(
        (i for i, w in enumerate(lows) if i > 0 and (w in _PREPOSITIONS or not w[0].isalnum())),
        len(toks),
    )
    end = min(v if v is not None else len(toks), stop)
    subject_words = toks[:end] or toks[:1]
    if v is None and len(subject_words) > 4:
        # No verb it knows (another language, a list of words): take a short subject rather
        # than the whole idea, which would then be pasted into the prompt word for word.
        subject_words = subject_words[:3]
    subject = " ".join(subject_words)
    if subject_words and lows[0] in _DETERMINERS | _NUMBERS:
        subject = subject[0].lower() + subject[1:]
    elif subject_words:
        subject = "the " + subject if not subject_words[0][0].isupper() else subject
    # The action: from the verb to the end of the first clause.
    action = ""
    if v is not None:
        clause_end = next((i for i in range(v, len(toks)) if not lows[i][0].isalnum()), len(toks))
        action = " ".join(toks[v:clause_end])
        # The time of day is its own part; the action reads without it.
        action = re.sub(
            r"\s+(?:at|in|during|by|before|after)\s+(?:the\s+)?(?:late\s+|early\s+)?(?:"
            + "|".join(re.escape(k) for k, _ in TIMES)
            + r")\b",
            "",
            action,
            flags=re.I,
        ).strip()
    # Noun phrases: runs of words between verbs, prepositions, conjunctions and punctuation.
    phrases: list[tuple[str, list[str]]] = []  # (phrase as written, words without determiner)
    run: list[str] = []
    for i, (t, w) in enumerate(zip(toks, lows, strict=True)):
        boundary = (
            not w[0].isalnum()
            or w in _PREPOSITIONS
            or w in _CONJUNCTIONS
            or w in _AUXILIARIES
            or (i > 0 and _verb_at(lows, i))
        )
        if boundary:
            if run:
                phrases.append((" ".join(run), _strip_det(run)))
            run = []
        else:
            run.append(t)
    if run:
        phrases.append((" ".join(run), _strip_det(run)))
    time = time_of(idea)
    place = ""
    objects: list[str] = []
    subject_low = subject.lower()
    for written, words in phrases:
        if not words:
            continue
        lw = [w.lower() for w in words]
        if all(w in _TIME_WORDS or w in _NUMBERS for w in lw):
            continue
        if " ".join(lw) in subject_low:
            continue
        if v is None and len(words) > 4:
            continue  # an idea it cannot read: no object is the idea itself again
        if not place and lw[-1] in PLACES:
            place = _with_article(written)
            continue
        objects.append(_with_article(written))
    if not place:
        # "a lighthouse keeper": the subject names its place.
        for w in subject_low.split():
            if w in PLACES:
                place = f"the {w}"
                break
    return Idea(
        text=idea,
        subject=subject,
        action=action,
        place=place,
        time=time,
        objects=objects[:4],
    )


def _with_article(phrase: str) -> str:
    first = phrase.split()[0].lower()
    if first in _DETERMINERS or first in _NUMBERS or phrase.endswith("s"):
        return phrase[0].lower() + phrase[1:] if first in _DETERMINERS else phrase
    return f"the {phrase}"


def light_source(idea: Idea) -> str:
    """Something in the idea's own world that can light it, visible in frame."""
    for phrase in (*idea.objects, idea.place, idea.subject):
        for w in reversed(phrase.lower().split()):
            if w in LIGHT_SOURCES:
                return LIGHT_SOURCES[w]
    return "a single practical lamp in frame"


def sound_cue(idea: Idea) -> str:
    for phrase in (*idea.objects, idea.place, idea.subject, idea.text):
        for w in re.findall(r"[a-z]+", phrase.lower()):
            if w in SOUND_CUES:
                return SOUND_CUES[w]
    return "one small, close sound, then silence"


# What a subject is decides what a draft may give it: a person has a face and hands; an
# animal has a coat and a stance; a thing or a place has neither.
ANIMALS = frozenset(
    """
    fox dog cat bird horse whale owl deer wolf bear rabbit hare heron crow raven eagle hawk
    fish shark dolphin seal otter lion tiger elephant giraffe monkey ape cow sheep goat pig
    duck goose swan butterfly bee moth spider snake lizard frog turtle octopus crab mouse rat
    squirrel badger hedgehog bat penguin puppy kitten pony stag doe cub foal calf lamb
    """.split()
)
PEOPLE = frozenset(
    """
    man woman men women boy girl boys girls kid kids child children baby person people
    mother father mom dad son daughter sister brother grandmother grandfather grandma
    grandpa family couple friend friends stranger chef cook baker nurse doctor teacher
    student worker farmer fisherman sailor soldier pilot driver dancer singer artist
    painter keeper pianist musician astronaut detective founder director writer poet
    monk priest queen king prince princess bride groom athlete runner climber surfer
    skater swimmer boxer player crew team tourist traveler traveller hiker villager
    """.split()
)


def kind_of(subject: str) -> str:
    """ "person", "animal" or "thing", from the subject's head noun."""
    words = re.findall(r"[a-z]+", subject.lower())
    head = words[-1] if words else ""
    if head in ANIMALS or head.rstrip("s") in ANIMALS:
        return "animal"
    if head in PEOPLE or head.rstrip("s") in PEOPLE:
        return "person"
    if re.search(r"(?:er|or|ist|ian)s?$", head) and head not in PLACES and len(head) > 4:
        return "person"  # keeper, sailor, florist, librarian
    return "thing"


# A line that is a field of a labelled block, whose value is a noun phrase by the vendor's
# design (Sora's cinematography block): not a sentence.
_FIELD = re.compile(
    r"^(?:Style|Camera shot|Lens|Lighting|Palette|Mood|Cinematography|Actions|Dialogue)\s*:"
)
_PREFIX = re.compile(r"^(?:-\s*\d+-\d+\s*s:|Shot \d+:|Sound:)\s*")
_EXTRA_VERBS = frozenset(
    "is are was were be been has have had do does did can will ends holds stays waits "
    "carries shifts opens comes looks sits moves catches lands".split()
)


def sentences(prompt: str) -> list[str]:
    """The sentences of a prompt: each line cut at its full stops, labelled fields left out,
    a beat's or shot's label taken off."""
    out: list[str] = []
    for line in prompt.splitlines():
        line = line.strip()
        if not line or _FIELD.match(line):
            continue
        line = _PREFIX.sub("", line)
        out += [s for s in re.split(r"(?<=[.!?])\s+", line) if s.strip(" .")]
    return out


def verbless(prompt: str) -> list[str]:
    """The sentences of `prompt` with no verb this reader knows: fragments."""
    bad = []
    for s in sentences(prompt):
        words = re.findall(r"[a-z]+", s.lower())
        if not any(
            (w in VERBS and w not in _NOUNISH) or w in _AUXILIARIES or w in _EXTRA_VERBS
            for w in words
        ):
            bad.append(s)
    return bad


# Verb forms that in a prompt are nearly always nouns ("available light", "film stock"):
# they do not make a sentence.
_NOUNISH = frozenset(
    """
    light lights film water plant paint record test show text call turn play rest work use
    dance drop fall hold cut shot look wave ride drive walk run sound frame stack spot pack
    sort plan trade share lock kiss hug cry laugh smile sail row search watch catch wake
    light lit made set sweep burn feed drink
    """.split()
)
