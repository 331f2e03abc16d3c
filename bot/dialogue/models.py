"""The domain of a session: turns, drafts, the locked prompt and what they cost.

Everything a report or the Slack thread shows as a number (rounds, messages,
interjections, prompt length, tokens) is computed here from the transcript,
never read from model text and never stored as a separate counter.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.dialogue.text import clean_value
from bot.llm.usage import Usage

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class CleanModel(BaseModel):
    """A model whose strings hold no control characters or bidi overrides
    (`bot.dialogue.text.clean`): nothing a person or a model wrote can carry them into
    the store, the next request or a file."""

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: object) -> object:
        # One call per model, not per field: models are built on every turn and load.
        if isinstance(data, dict):
            return {k: clean_value(v) for k, v in data.items()}
        return data


class Speaker(StrEnum):
    PERSONA = "persona"
    COPILOT = "copilot"
    HUMAN = "human"


class SessionStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # a turn failed; Retry resumes from the same transcript
    LOCKED = "locked"
    STOPPED = "stopped"

    @property
    def finished(self) -> bool:
        return self in (SessionStatus.LOCKED, SessionStatus.STOPPED)


class LockReason(StrEnum):
    APPROVED = "approved"
    HUMAN = "human"
    ROUND_LIMIT = "round_limit"
    NO_PROGRESS = "no_progress"


class PromptParts(BaseModel):
    """The structured parts a good video prompt has; the prompt text weaves them."""

    model_config = ConfigDict(frozen=True)

    subject: str
    setting: str
    action_beats: list[str]
    camera: str
    lighting_palette: str
    # Empty for a target that makes no sound: its schema has no sound field.
    sound: str
    style: str
    avoid: list[str]


class Draft(CleanModel):
    """One versioned draft. `title` is a caption; `prompt_text` is the prompt."""

    model_config = ConfigDict(frozen=True)

    version: int
    title: str
    prompt_text: str
    duration_seconds: int
    size: str
    target: str
    parts: PromptParts
    # Set where the target has a choice of resolutions (`TargetProfile.resolution_choices`).
    resolution: str = ""

    def same_content(self, other: Draft) -> bool:
        """True when `other` says nothing new: everything but the version is equal."""
        return self.model_dump(exclude={"version"}) == other.model_dump(exclude={"version"})


class Verdict(CleanModel):
    model_config = ConfigDict(frozen=True)

    decision: Literal["revise", "approve"]
    version: int | None = None


class Turn(CleanModel):
    model_config = ConfigDict(frozen=True)

    index: int
    speaker: Speaker
    author: str
    text: str
    round: int
    draft: Draft | None = None
    verdict: Verdict | None = None
    usage: Usage = Usage()
    model: str | None = None
    at: datetime = Field(default_factory=utcnow)
    # Identity of the human interjection (e.g. Slack message ts), for dedupe.
    source_id: str | None = None


class Note(CleanModel):
    """A teammate's note that no turn heard: it arrived after the last turn started."""

    model_config = ConfigDict(frozen=True)

    author: str
    text: str
    at: datetime = Field(default_factory=utcnow)


class LockedPrompt(CleanModel):
    model_config = ConfigDict(frozen=True)

    draft: Draft
    locked_by: str
    locked_at: datetime
    reason: LockReason


class Look(CleanModel):
    """A persona's visual taste as the parts of a shot it drives (camera, light, palette...)."""

    model_config = ConfigDict(frozen=True)

    camera: str = ""
    lens: str = ""
    light: str = ""
    palette: str = ""
    style: str = ""
    sound: str = ""
    mood: str = ""


class Persona(CleanModel):
    model_config = ConfigDict(frozen=True)

    name: str  # key, e.g. "founder"; "custom" for free text
    display_name: str
    icon_emoji: str
    role: str
    voice: str
    taste: str
    must_haves: list[str]
    look: Look = Look()
    pet_peeves: list[str] = Field(default_factory=list)
    # A free-text persona: the words it was asked for with, as typed. Until the persona
    # sheet is written from them (one model call, `Engine.expand_persona`) it has no
    # must-haves; once written, the sheet is stored and never written again.
    description: str = ""

    @property
    def pending(self) -> bool:
        """A free-text persona whose sheet is not written yet."""
        return bool(self.description) and not self.must_haves


AudioSupport = Literal["none", "ambient", "dialogue"]
PromptLayout = Literal["blocks", "prose", "motion_first", "shots"]
# The structured parts a vendor's prompt structure can ask for, in `TargetProfile.structure`.
PartName = Literal["style", "subject", "setting", "action", "camera", "lighting", "sound"]
PART_NAMES: tuple[PartName, ...] = (
    "style",
    "subject",
    "setting",
    "action",
    "camera",
    "lighting",
    "sound",
)


class RenderTier(CleanModel):
    """One quality tier of a renderer: the vendor's model id and output resolution."""

    model_config = ConfigDict(frozen=True)

    model: str
    resolution: str = ""


class RenderTable(CleanModel):
    """How one renderer renders this target's drafts: the vendor's value for each draft size
    and duration (identity where a value is absent), and which model is the cheap draft tier
    and which the full-quality master."""

    model_config = ConfigDict(frozen=True)

    sizes: dict[str, str] = Field(default_factory=dict)
    durations: dict[str, int] = Field(default_factory=dict)
    draft: RenderTier
    master: RenderTier


class TargetProfile(CleanModel):
    """A video model's rules. `durations` and `sizes` are the legal API values of a draft."""

    model_config = ConfigDict(frozen=True)

    name: str
    model_name: str
    durations: list[int]
    sizes: list[str]
    prompt_min_chars: int
    prompt_max_chars: int
    rules: list[str]
    vendor: str = ""
    # Set when the model's API is gone: what still works, and since when.
    retired: str = ""
    size_label: str = "size"
    aspect_ratios: list[str] = Field(default_factory=list)
    resolutions: list[str] = Field(default_factory=list)
    # Sizes that only allow some durations, e.g. Hailuo-02 at 1080P: 6 s only.
    size_durations: dict[str, list[int]] = Field(default_factory=dict)
    # Resolutions that only allow some durations, e.g. Veo 3.1 at 1080p and 4k: 8 s only.
    resolution_durations: dict[str, list[int]] = Field(default_factory=dict)
    audio: AudioSupport = "none"
    negative_prompt: bool = False
    layout: PromptLayout = "prose"
    structure: list[PartName] = Field(default_factory=lambda: list(PART_NAMES))
    guide: list[str] = Field(default_factory=list)
    max_camera_moves_per_shot: int = 1
    forbids_on_screen_text: bool = True
    use_in: str = ""
    sources: dict[str, str] = Field(default_factory=dict)
    # The renderers that can render this target's drafts (bot.render), in order of preference.
    render: dict[str, RenderTable] = Field(default_factory=dict)

    @property
    def silent(self) -> bool:
        return self.audio == "none"

    @property
    def resolution_choices(self) -> list[str]:
        """The resolutions a draft picks from: none when the size already is the resolution
        (Hailuo's 768P/1080P) or when there is only one (then it is a fact, not a choice)."""
        if self.size_label == "resolution" or len(self.resolutions) < 2:
            return []
        return list(self.resolutions)


class Origin(CleanModel):
    """Where a session was started. Plain data: the domain knows no Slack."""

    model_config = ConfigDict(frozen=True)

    surface: Literal["terminal", "slack"] = "terminal"
    channel_id: str | None = None
    thread_ts: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    team_id: str | None = None
    # What kind of place the channel is, as Slack said (bot.slack.privacy.Place): "public",
    # "private_channel", "dm", "group_dm", "shared", "unknown"; None: not asked (terminal).
    place: str | None = None


class Session(CleanModel):
    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    idea: str
    persona: Persona
    target: TargetProfile
    max_rounds: int
    status: SessionStatus = SessionStatus.RUNNING
    turns: list[Turn] = Field(default_factory=list)
    locked: LockedPrompt | None = None
    created_at: datetime = Field(default_factory=utcnow)
    error: str | None = None
    stopped_by: str | None = None
    origin: Origin = Origin()
    # Notes typed after the last turn started, answered "too late" and kept for the report.
    unheard: list[Note] = Field(default_factory=list)
    # What writing a free-text persona's sheet cost (one call, and its repair if any).
    persona_usage: Usage = Usage()
    # A remix: the library entry it started from, and that entry's prompt, which the
    # Copilot is given as draft v0 (the source) to start from.
    remixed_from: str | None = None
    source_draft: Draft | None = None

    # ---- derived from the transcript -------------------------------------------------

    @property
    def agent_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker != Speaker.HUMAN]

    @property
    def next_turn(self) -> int:
        """The number of the next agent turn: 0 is the Copilot's opening.

        This is the fencing token of a queue job ("advance S to turn N").
        """
        return len(self.agent_turns)

    @property
    def next_speaker(self) -> Speaker:
        agents = self.agent_turns
        if not agents or agents[-1].speaker == Speaker.PERSONA:
            return Speaker.COPILOT
        return Speaker.PERSONA

    @property
    def next_round(self) -> int:
        """Round of the next agent turn: 0 for the opening, k for round k."""
        n = self.next_turn
        return (n + 1) // 2

    @property
    def rounds(self) -> int:
        """Rounds that have started (round 0, the opening, is not counted)."""
        return max((t.round for t in self.agent_turns), default=0)

    @property
    def messages(self) -> int:
        return len(self.turns)

    @property
    def interjections(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == Speaker.HUMAN]

    @property
    def drafts(self) -> list[Draft]:
        return [t.draft for t in self.turns if t.draft is not None]

    @property
    def latest_draft(self) -> Draft | None:
        drafts = self.drafts
        return drafts[-1] if drafts else None

    @property
    def usage(self) -> Usage:
        total = self.persona_usage
        for t in self.turns:
            total = total + t.usage
        return total

    @property
    def models(self) -> list[str]:
        """Models as served, in order of first use."""
        seen: list[str] = []
        for t in self.turns:
            if t.model and t.model not in seen:
                seen.append(t.model)
        return seen

    @property
    def pending_humans(self) -> list[Turn]:
        """Interjections after the newest agent turn: the next speaker must answer them."""
        out: list[Turn] = []
        for t in reversed(self.turns):
            if t.speaker != Speaker.HUMAN:
                break
            out.append(t)
        return list(reversed(out))

    @property
    def persona_pushed_back(self) -> bool:
        """True once the persona has asked for a revision of some draft."""
        seen_draft = False
        for t in self.turns:
            if t.draft is not None:
                seen_draft = True
            if (
                seen_draft
                and t.speaker == Speaker.PERSONA
                and t.verdict is not None
                and t.verdict.decision == "revise"
            ):
                return True
        return False

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def locked_at(self) -> datetime | None:
        return self.locked.locked_at if self.locked else None
