"""The Slack surface against the fake Slack Web API and the real Redis.

Sessions run with the real engine and the offline model (or a scripted one)
through `drive_turn`, as the worker runs them. Time is injected: a fake clock
that only the surface's own waits (and the tests) move, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.agents import COPILOT_ICON, COPILOT_NAME
from bot.dialogue.engine import Engine, OutagePolicy, add_interjection, stop
from bot.dialogue.models import Origin, Session, SessionStatus, Speaker, Turn
from bot.dialogue.report import fence, render_markdown
from bot.driver import LOCK_STEPS, drive_turn, show, steps_after
from bot.llm.base import ModelError, ModelReply, ModelRequest, TextCallback
from bot.llm.offline import OfflineModel
from bot.slack.blocks import (
    ACTION_RETRY,
    MARKDOWN_BLOCK_MAX_CHARS,
    METADATA_EVENT,
    TURN_CROSSPOST,
    TURN_LOCKED,
    TURN_PAUSED,
    TURN_REPORT,
    TURN_STOPPED,
    WRITING,
    escape,
    root_blocks,
    root_text,
    split_markdown,
)
from bot.slack.client import close_client, make_client
from bot.slack.live import STATUS_REFRESH_S
from bot.slack.surface import ROOT_EVERY_S, SlackSurface
from bot.surfaces.base import MARK_HEARD, SHOW_TURN, UPDATE_ROOT
from bot.worker import Worker, WorkerConfig
from state import PostRateLimiter, State
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, FakeSlack
from tests.support import ScriptedModel, copilot, draft_json, make_session, message_body, persona

CHANNEL = "C0SORA"
PROMPTS = "C0PROMPTS"
ALICE = "U0ALICE"


class FakeClock:
    """A monotonic clock that moves only when told to, or when the surface sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class CountingLimiter(PostRateLimiter):
    """The real limiter (fast enough for tests), counting the tokens taken from it."""

    def __init__(self, state: State) -> None:
        super().__init__(state.redis, state.keys, rate_per_s=1000.0, burst=1000)
        self.waits: Counter[str] = Counter()
        self.held: list[tuple[str, float]] = []

    async def acquire(self, channel: str, *, team: str | None = None) -> float:
        delay = await super().acquire(channel, team=team)
        if delay == 0:
            self.waits[channel] += 1
        return delay

    async def hold(self, channel: str, seconds: float, *, team: str | None = None) -> None:
        # Redis's clock refills the bucket, and it is real time while the tests'
        # clock is not: hold a thousandth as long (test_state_ratelimit holds for real).
        self.held.append((channel, seconds))
        await super().hold(channel, seconds / 1000, team=team)


class TickingModel:
    """The offline model, with the clock moving `step` seconds at every streamed chunk."""

    def __init__(self, clock: FakeClock, step: float) -> None:
        self.inner = OfflineModel()
        self.clock = clock
        self.step = step

    @property
    def offline(self) -> bool:
        return True

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        async def tick(text: str) -> None:
            self.clock.now += self.step
            assert on_text is not None
            await on_text(text)

        return await self.inner.complete(request, tick if on_text is not None else None)


@dataclasses.dataclass
class Rig:
    slack: FakeSlack
    state: State
    limiter: CountingLimiter
    clock: FakeClock
    client: AsyncWebClient

    def settings(self, **kw: Any) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=self.slack.token,
            slack_api_url=self.slack.api_url,
            **kw,
        )

    def surface(self, **kw: Any) -> SlackSurface:
        return SlackSurface(
            client=self.client,
            state=self.state,
            settings=self.settings(**kw),
            clock=self.clock,
            sleep=self.clock.sleep,
            wall_clock=self.clock,
        )

    async def session(self, *, origin: dict[str, Any] | None = None, **kw: Any) -> Session:
        """A session whose thread root the app has posted, as the start handler does."""
        session = make_session(**kw)
        root = await self.client.chat_postMessage(
            channel=CHANNEL, text=root_text(session), blocks=root_blocks(session)
        )
        fields: dict[str, Any] = {
            "surface": "slack",
            "channel_id": CHANNEL,
            "thread_ts": root["ts"],
            "user_id": ALICE,
            "user_name": "alice",
            "team_id": TEAM_ID,
        }
        session.origin = Origin(**(fields | (origin or {})))
        return session

    def thread(self, session: Session) -> list[dict[str, Any]]:
        return self.slack.thread(CHANNEL, str(session.origin.thread_ts))

    def root(self, session: Session) -> dict[str, Any]:
        return self.thread(session)[0]


@pytest.fixture
async def rig(real_state: State) -> AsyncIterator[Rig]:
    async with FakeSlack() as slack:
        # This rig's clock does not move real time: shares land at once (files.info
        # confirms them on its first answer).
        slack.share_delay_s = 0.0
        slack.seed_channel("sora", CHANNEL)
        slack.seed_channel("sora-prompts", PROMPTS)
        slack.seed_user(ALICE, "alice", display_name="Alice Liddell")
        limiter = CountingLimiter(real_state)
        state = dataclasses.replace(real_state, ratelimit=limiter)
        clock = FakeClock()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=slack.token,
            slack_api_url=slack.api_url,
        )
        client = make_client(settings, sleep=clock.sleep)
        yield Rig(slack=slack, state=state, limiter=limiter, clock=clock, client=client)
        await close_client(client)
        assert slack.internal_errors == []


def tag(message: dict[str, Any]) -> tuple[str, int, int] | None:
    meta = message.get("metadata") or {}
    if meta.get("event_type") != METADATA_EVENT:
        return None
    p = meta["event_payload"]
    return p["session"], p["turn"], p["part"]


def tagged(messages: list[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
    """The messages tagged with `turn`, in part order."""
    found = [(t[2], m) for m in messages if (t := tag(m)) is not None and t[1] == turn]
    return [m for _, m in sorted(found, key=lambda pm: pm[0])]


def markdown_chars(message: dict[str, Any]) -> int:
    return sum(len(b["text"]) for b in message.get("blocks", []) if b["type"] == "markdown")


def block_texts(message: dict[str, Any]) -> str:
    """Every text and value in a message's blocks, one a line, as shown."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("text", "value", "action_id") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks", []))
    return "\n".join(found)


async def run_turns(
    engine: Engine,
    session: Session,
    surface: SlackSurface,
    n: int | None = None,
    *,
    clock: FakeClock | None = None,
) -> None:
    """Take `n` turns (all, if None); with `clock`, each one ROOT_EVERY_S after the last,
    so that the root shows every one."""
    done = 0
    while session.status == SessionStatus.RUNNING and (n is None or done < n):
        await drive_turn(engine, session, surface)
        done += 1
        if clock is not None:
            clock.now += ROOT_EVERY_S


# ---- turns ---------------------------------------------------------------------------


async def test_turns_are_thread_replies_under_each_speakers_name_and_icon_and_the_root_follows(
    rig: Rig,
) -> None:
    session = await rig.session()
    surface = rig.surface()
    await run_turns(Engine(model=OfflineModel()), session, surface, n=3, clock=rig.clock)

    replies = rig.thread(session)[1:]
    agents = session.agent_turns
    assert len(replies) == 3
    for number, (message, turn) in enumerate(zip(replies, agents, strict=True)):
        if turn.speaker == Speaker.COPILOT:
            assert (message["username"], message["icons"]) == (
                COPILOT_NAME,
                {"emoji": COPILOT_ICON},
            )
        else:
            assert message["username"] == session.persona.display_name
            assert message["icons"] == {"emoji": session.persona.icon_emoji}
        assert tag(message) == (session.id, number, 0)
        assert message_body(message) == escape(turn.text)
        assert await rig.state.posts.get(session.id, number) == {0: message["ts"]}
    assert [t.speaker for t in agents] == [Speaker.COPILOT, Speaker.PERSONA, Speaker.COPILOT]
    draft = agents[2].draft
    assert draft is not None and fence(escape(draft.prompt_text)) in block_texts(replies[2])

    root = block_texts(rig.root(session))
    assert f"*Round:* {session.rounds} of {session.max_rounds}" in root
    assert "Running" in root and f"*Tokens:* {session.usage.total:,}" in root
    # Every post took a token from the channel's limiter first.
    starts = len(rig.slack.calls_to("chat.startStream"))
    posts = [c for c in rig.slack.calls_to("chat.postMessage") if "thread_ts" in c.params]
    assert rig.limiter.waits[CHANNEL] == starts + len(posts) == 3
    assert all("link_names" not in c.params for c in rig.slack.calls)


async def test_every_turn_message_is_created_tagged_never_as_an_untagged_stream(
    rig: Rig,
) -> None:
    """chat.startStream cannot carry metadata, so a message it created could not be
    found again after a crash: every message is created by chat.postMessage, tagged."""
    session = await rig.session()
    surface = rig.surface()
    await run_turns(Engine(model=TickingModel(rig.clock, step=0.3)), session, surface, n=2)

    assert rig.slack.calls_to("chat.startStream") == []
    posts = rig.slack.calls_to("chat.postMessage")[1:]  # after the root
    assert len(posts) == 2
    assert all(c.params["metadata"]["event_type"] == METADATA_EVENT for c in posts)


async def test_update_mode_posts_then_updates_at_most_once_a_second(rig: Rig) -> None:
    session = await rig.session()
    surface = rig.surface()
    updates: list[tuple[float, str, str]] = []
    original = rig.client.chat_update

    async def spy(**kw: Any) -> Any:
        updates.append((rig.clock(), kw["ts"], kw.get("text") or ""))
        return await original(**kw)

    rig.client.chat_update = spy  # type: ignore[method-assign]
    surface.interim_client.chat_update = spy  # type: ignore[method-assign]
    await run_turns(Engine(model=TickingModel(rig.clock, step=0.4)), session, surface, n=2)

    assert rig.slack.calls_to("chat.startStream") == []
    for number, turn in enumerate(session.agent_turns):
        [message] = tagged(rig.thread(session), number)
        assert message_body(message) == escape(turn.text)  # the final update is complete
        times = [t for t, ts, _ in updates if ts == message["ts"]]
        assert len(times) >= (3 if turn.speaker == Speaker.COPILOT else 2)  # interim, final
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
        shown = [text for _, ts, text in updates if ts == message["ts"]]
        assert all(escape(turn.text).startswith(s.removesuffix("…")) for s in shown)
    root_times = [t for t, ts, _ in updates if ts == session.origin.thread_ts]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(root_times))


async def test_mentions_in_model_output_reach_slack_escaped(rig: Rig) -> None:
    loud = "Hey <!channel> and <!here>, ask <@U123> & co."
    model = ScriptedModel(
        [
            copilot(loud, draft_json(prompt=draft_json()["prompt_text"] + " <!channel> <@U123>")),
            persona(f"{loud} I need more rain."),
        ]
    )
    session = await rig.session()
    await run_turns(Engine(model=model), session, rig.surface(), n=2)

    stored = json.dumps(rig.thread(session)[1:], ensure_ascii=False)
    sent = json.dumps([c.params for c in rig.slack.calls], ensure_ascii=False)
    for raw in ("<!channel>", "<!here>", "<@U123>"):
        assert raw not in stored and raw not in sent
    assert "&lt;!channel&gt;" in stored and "&lt;!here&gt;" in stored
    assert "&lt;@U123&gt;" in stored and "&amp; co." in stored
    assert all("link_names" not in c.params for c in rig.slack.calls)


# ---- long turns ------------------------------------------------------------------------


def long_text() -> str:
    para = "The lighthouse beam sweeps the bay, slow and patient. " * 20 + "\n\n"
    code = "```\n" + "FADE IN: a wet stone stair, the keeper climbs.\n" * 60 + "```\n\n"
    return para * 10 + code + para * 12 + code + para * 5


async def take_turn_directly(
    surface: SlackSurface,
    session: Session,
    text: str,
    *,
    posted: dict[int, str] | None = None,
    redo: bool = False,
) -> Turn:
    """An agent turn written straight into the surface, as the engine would stream it."""
    number = session.next_turn
    sink = await surface.turn_started(
        session,
        speaker=session.next_speaker,
        author=COPILOT_NAME,
        turn=number,
        round=session.next_round,
        posted=posted or {},
        redo=redo,
    )
    for i in range(0, len(text), 500):
        await sink.delta(text[i : i + 500])
    turn = Turn(
        index=len(session.turns),
        speaker=session.next_speaker,
        author=COPILOT_NAME,
        text=text,
        round=session.next_round,
    )
    session.turns.append(turn)
    await show(surface, session, [f"{SHOW_TURN}:{number}", UPDATE_ROOT])
    return turn


async def test_a_turn_longer_than_a_message_is_split_and_a_shorter_redo_drops_the_rest(
    rig: Rig,
) -> None:
    text = long_text()
    assert len(text) > 2 * MARKDOWN_BLOCK_MAX_CHARS
    session = await rig.session()
    before = session.model_copy(deep=True)
    surface = rig.surface()
    await take_turn_directly(surface, session, text)

    parts = tagged(rig.thread(session), 0)
    assert len(parts) >= 3
    assert [tag(m) for m in parts] == [(session.id, 0, k) for k in range(len(parts))]
    assert all(0 < markdown_chars(m) <= MARKDOWN_BLOCK_MAX_CHARS for m in parts)
    assert "".join(message_body(m) for m in parts) == text
    assert all(message_body(m).count("```") % 2 == 0 for m in parts)  # no fence cut in half
    assert all(m["username"] == COPILOT_NAME for m in parts)

    # The turn is redone (its worker died before the save) with a short text.
    ledger = await rig.state.posts.get(session.id, 0)
    assert sorted(ledger) == list(range(len(parts)))
    await take_turn_directly(rig.surface(), before, "Short now.", posted=ledger)
    [message] = tagged(rig.thread(session), 0)
    assert message["ts"] == parts[0]["ts"] and message["text"] == "Short now."


def test_split_markdown_cuts_between_paragraphs_and_never_inside_a_fence() -> None:
    text = long_text()
    pieces = split_markdown(text)
    assert "".join(pieces) == text
    assert all(len(p) <= MARKDOWN_BLOCK_MAX_CHARS for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert all(p.endswith("\n\n") for p in pieces[:-1])
    assert split_markdown("") == [] and split_markdown("short") == ["short"]


def test_split_markdown_closes_and_reopens_a_fence_longer_than_a_message() -> None:
    code = "".join(f"line {i}: a slow push-in\n" for i in range(1200))
    text = "Here it is:\n\n````text\n" + code + "````\nDone."
    pieces = split_markdown(text)
    assert len(pieces) >= 3 and all(len(p) <= MARKDOWN_BLOCK_MAX_CHARS for p in pieces)
    assert pieces[0].startswith("Here it is:\n\n````text\n")
    assert all(p.rstrip("Done.").endswith("\n````\n") or p.endswith("````") for p in pieces)
    assert all(p.startswith("````text\n") for p in pieces[1:])
    inner = "".join(p.removeprefix("````text\n").split("````")[0] for p in pieces[1:])
    first = pieces[0].split("````text\n", 1)[1].split("````")[0]
    assert first + inner == code


def test_split_markdown_never_splits_an_escaped_entity() -> None:
    text = escape("<&>" * 10_000)
    pieces = split_markdown(text)
    assert "".join(pieces) == text
    assert all(p.startswith("&") and p.endswith(";") for p in pieces)


# ---- redone turns ------------------------------------------------------------------------


@pytest.mark.parametrize("found_by", ["ledger", "metadata tag"])
async def test_a_redone_turn_updates_its_earlier_message(rig: Rig, found_by: str) -> None:
    session = await rig.session()
    before = session.model_copy(deep=True)
    engine = Engine(model=OfflineModel())
    await drive_turn(engine, session, rig.surface())
    [first] = tagged(rig.thread(session), 0)

    posted = await rig.state.posts.get(session.id, 0)
    if found_by == "metadata tag":  # the worker died after posting, before recording
        await rig.state.redis.delete(rig.state.keys.posts(session.id))
        posted = {}
    another_worker = rig.surface()
    await drive_turn(engine, before, another_worker, posted=posted, redo=True)

    [message] = tagged(rig.thread(session), 0)
    assert message["ts"] == first["ts"]
    assert message_body(message) == escape(before.agent_turns[0].text)
    assert len(rig.thread(session)) == 2
    assert await rig.state.posts.get(session.id, 0) == {0: first["ts"]}


# ---- the end of a session -----------------------------------------------------------------


async def test_lock_pins_the_prompt_cross_posts_it_uploads_the_report_and_shows_locked(
    rig: Rig,
) -> None:
    session = await rig.session(idea="🌊 A lighthouse keeper finds a message in a bottle ✨")
    surface = rig.surface(prompts_channel=PROMPTS)
    await run_turns(Engine(model=OfflineModel()), session, surface)
    assert session.status == SessionStatus.LOCKED and session.locked is not None
    prompt = session.locked.draft.prompt_text

    thread = rig.thread(session)
    [reply] = tagged(thread, TURN_LOCKED)
    assert fence(escape(prompt)) in block_texts(reply)
    assert "**Structured parts**" in block_texts(reply)
    for label in ("Rounds", "Messages", "Human interjections", "Prompt length", "Model"):
        assert f"**{label}**" in block_texts(reply)
    assert f"**Prompt length**: {len(prompt)} characters" in block_texts(reply)
    assert "**Estimated cost**" in block_texts(reply) and "approved" in block_texts(reply)
    assert rig.slack.pins(CHANNEL) == [reply["ts"]]

    [cross] = tagged(rig.slack.messages(PROMPTS), TURN_CROSSPOST)
    link = await rig.client.chat_getPermalink(channel=CHANNEL, message_ts=session.origin.thread_ts)
    assert fence(escape(prompt)) in block_texts(cross)
    assert link["permalink"] in block_texts(cross) and "thread_ts" not in cross
    # /sora stored the starter's handle; the lock, the first place a name shows, looks
    # up their display name, for the cross-post and (saved with the session) the library.
    assert "started by Alice Liddell" in block_texts(cross)
    assert session.origin.user_name == "Alice Liddell"

    [report] = rig.slack.files()
    assert report["name"] == f"sora-session-{session.id}.md"
    content = rig.slack.file_content(report["id"])
    assert content == render_markdown(session).encode("utf-8")
    assert "🌊" in content.decode("utf-8") and "✨" in content.decode("utf-8")
    [share] = [m for m in thread if m.get("files")]
    assert share["files"][0]["id"] == report["id"]
    assert (await rig.state.posts.get(session.id, TURN_REPORT))[0] == report["id"]
    assert ":lock: Locked" in block_texts(rig.root(session))
    assert "sora_stop" not in block_texts(rig.root(session))  # no controls once locked

    # Every post in both channels took a token from that channel's limiter.
    starts = len(rig.slack.calls_to("chat.startStream"))
    thread_posts = [
        c for c in rig.slack.calls_to("chat.postMessage") if c.params["channel"] == CHANNEL
    ]
    root_post, report_upload = 1, 1  # the test posted the root itself
    assert rig.limiter.waits[CHANNEL] == starts + len(thread_posts) - root_post + report_upload
    assert rig.limiter.waits[PROMPTS] == 1

    # Done again (a redo, or another worker): nothing new is posted, pinned or uploaded.
    calls = Counter(c.method for c in rig.slack.calls)
    for again in (surface, rig.surface(prompts_channel=PROMPTS)):
        await show(again, session, LOCK_STEPS)
    now = Counter(c.method for c in rig.slack.calls)
    for method in ("chat.postMessage", "files.getUploadURLExternal", "chat.startStream"):
        assert now[method] == calls[method], method
    assert len(rig.thread(session)) == len(thread)
    assert len(rig.slack.messages(PROMPTS)) == 1
    assert rig.slack.pins(CHANNEL) == [reply["ts"]] and len(rig.slack.files()) == 1


async def test_a_lock_reads_no_thread_unless_a_post_of_it_was_tried_before(rig: Rig) -> None:
    """Reading a thread (conversations.replies) is Tier 3, ~50 a minute for the whole
    workspace: a lock must not spend one on every session. Only a post tried before
    (a crash between the post and its record) is looked for first, and found."""
    session = await rig.session()
    surface = rig.surface(prompts_channel=PROMPTS)
    await run_turns(Engine(model=OfflineModel()), session, surface)
    assert session.status == SessionStatus.LOCKED
    assert rig.slack.calls_to("conversations.replies") == []
    [reply] = tagged(rig.thread(session), TURN_LOCKED)

    # As after a crash between the locked reply's post and its record: the attempt's
    # mark is there, the record is not.
    await rig.state.redis.hdel(rig.state.keys.posts(session.id), f"{TURN_LOCKED}:0")
    assert (await rig.state.posts.get(session.id, TURN_LOCKED)) == {}
    await show(rig.surface(prompts_channel=PROMPTS), session, LOCK_STEPS[:1])
    assert len(rig.slack.calls_to("conversations.replies")) == 1
    assert [m["ts"] for m in tagged(rig.thread(session), TURN_LOCKED)] == [reply["ts"]]
    assert (await rig.state.posts.get(session.id, TURN_LOCKED)) == {0: reply["ts"]}


async def test_a_failed_name_lookup_at_the_lock_keeps_the_handle(rig: Rig) -> None:
    session = await rig.session()
    rig.slack.error_next("users.info", "user_not_found")
    await run_turns(Engine(model=OfflineModel()), session, rig.surface(prompts_channel=PROMPTS))
    assert session.status == SessionStatus.LOCKED
    [cross] = tagged(rig.slack.messages(PROMPTS), TURN_CROSSPOST)
    assert "started by alice" in block_texts(cross)
    assert session.origin.user_name == "alice"


async def test_a_429_storm_delays_posts_but_loses_none(rig: Rig) -> None:
    session = await rig.session()
    rig.slack.fail_next("chat.postMessage", k=3, status=429, retry_after=1)
    rig.slack.fail_next("chat.update", k=2, status=429, retry_after=2)
    surface = rig.surface()
    await run_turns(Engine(model=OfflineModel()), session, surface)
    assert session.status == SessionStatus.LOCKED

    thread = rig.thread(session)
    numbers = [t[1] for m in thread if (t := tag(m)) is not None and t[1] >= 0]
    assert numbers == list(range(len(session.agent_turns)))  # each turn once, in order
    for number, turn in enumerate(session.agent_turns):
        [message] = tagged(thread, number)
        assert message_body(message) == escape(turn.text)
    limited = [c for c in rig.slack.calls if c.status == 429]
    assert len(limited) == 5
    assert sum(1 for s in rig.clock.slept if s >= 1.0) >= 5  # Retry-After honoured, no sleep


async def test_interjection_heard_adds_a_check_mark_once(rig: Rig) -> None:
    session = await rig.session()
    ts = rig.slack.seed_message(
        CHANNEL, "make it <!here> rain", user=ALICE, thread_ts=session.origin.thread_ts
    )
    turn = add_interjection(session, author="alice", text="make it rain", source_id=ts)
    surface = rig.surface()
    for _ in range(2):
        await show(surface, session, [f"{MARK_HEARD}:{turn.source_id}"])
    assert rig.slack.reactions(CHANNEL, ts) == {"white_check_mark": [BOT_USER_ID]}
    assert [c.error for c in rig.slack.calls_to("reactions.add")] == [None, "already_reacted"]


async def test_a_failed_turn_pauses_with_a_retry_button_once(rig: Rig) -> None:
    session = await rig.session()
    model = ScriptedModel([ModelError("overloaded <!channel>", status=529)])
    surface = rig.surface()
    engine = Engine(model=model, outage=OutagePolicy(window_seconds=0))  # no waiting out
    result = await drive_turn(engine, session, surface)
    assert result is None and session.status == SessionStatus.PAUSED
    await show(surface, session, steps_after(session))  # again: a redo of the same pause

    thread = rig.thread(session)
    [paused] = tagged(thread, TURN_PAUSED)
    assert tag(paused) == (session.id, TURN_PAUSED, 0)
    [retry] = [e for b in paused["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert (retry["action_id"], retry["value"]) == (ACTION_RETRY, session.id)
    assert "&lt;!channel&gt;" in block_texts(paused) and "<!channel>" not in block_texts(paused)
    [interrupted] = tagged(thread, 0)  # the failed turn's own message says so
    assert "Retry writes it again" in block_texts(interrupted)
    root = block_texts(rig.root(session))
    assert "Paused" in root and ACTION_RETRY in root


async def test_an_outage_being_waited_out_shows_on_the_root_and_the_turn_posts_once(
    rig: Rig,
) -> None:
    session = await rig.session()
    model = ScriptedModel(
        [ModelError("Anthropic API overloaded (529)", status=529), copilot("Hi", draft_json(1))]
    )
    roots: list[str] = []

    async def sleep(seconds: float) -> None:
        roots.append(block_texts(rig.root(session)))

    engine = Engine(model=model, sleep=sleep, jitter=lambda: 1.0)
    result = await drive_turn(engine, session, rig.surface())
    assert result is not None and session.status == SessionStatus.RUNNING
    assert len(roots) == 1 and "Claude is overloaded; retrying in 2 s" in roots[0]
    assert len(tagged(rig.thread(session), 0)) == 1  # the turn's message, posted once
    assert "Claude is overloaded" not in block_texts(rig.root(session))


async def test_a_turn_set_aside_by_another_worker_is_marked_when_the_session_pauses(
    rig: Rig,
) -> None:
    session = await rig.session()
    dead_worker = rig.surface()
    sink = await dead_worker.turn_started(
        session,
        speaker=Speaker.COPILOT,
        author=COPILOT_NAME,
        turn=0,
        round=0,
        posted={},
    )
    rig.clock.now += 5
    await sink.delta("Half a thought")  # and then the worker died
    [half] = tagged(rig.thread(session), 0)
    assert half["text"] == "Half a thought"
    session.status = SessionStatus.PAUSED
    session.error = "Turn 0 failed 3 times in a row; it was set aside. Retry resumes it."
    await show(rig.surface(), session, steps_after(session))

    [message] = tagged(rig.thread(session), 0)
    assert "Retry writes it again" in block_texts(message)
    assert len(tagged(rig.thread(session), TURN_PAUSED)) == 1


async def test_a_stopped_session_says_who_stopped_it_once(rig: Rig) -> None:
    session = await rig.session()
    surface = rig.surface()
    await run_turns(Engine(model=OfflineModel()), session, surface, n=1)
    stop(session, by="alice")
    for _ in range(2):
        await show(surface, session, steps_after(session))
    [stopped] = tagged(rig.thread(session), TURN_STOPPED)
    assert stopped["text"] == "Stopped by alice."
    assert "Stopped" in block_texts(rig.root(session))
    assert "sora_stop" not in block_texts(rig.root(session))


# ---- with the worker -------------------------------------------------------------------------


async def test_the_worker_runs_a_whole_session_into_its_thread(rig: Rig) -> None:
    session = await rig.session()
    await rig.state.sessions.create(session, enqueue=True)
    surface = rig.surface(prompts_channel=PROMPTS)
    worker = Worker(
        state=rig.state,
        engine=Engine(model=OfflineModel()),
        surface=surface,
        config=WorkerConfig(concurrency=4, block_ms=20, drain_s=0.5, reclaim_every_s=60),
    )
    finished: list[Session] = []
    stopping = asyncio.Event()

    def on_finished(s: Session) -> None:
        finished.append(s)
        stopping.set()

    worker.on_finished = on_finished
    await asyncio.wait_for(worker.run(stopping), timeout=20)

    [final] = finished
    assert final.status == SessionStatus.LOCKED
    thread = rig.thread(session)
    numbers = [t[1] for m in thread if (t := tag(m)) is not None and t[1] >= 0]
    assert numbers == list(range(len(final.agent_turns)))
    assert len(tagged(thread, TURN_LOCKED)) == 1 and len(rig.slack.files()) == 1
    assert ":lock: Locked" in block_texts(rig.root(session))


# ---- decide, save, then show: with the worker, the real queue and the fake's rules -----------

OPEN = "C0OPEN"  # a public channel the bot has not joined (it posts by chat:write.public)


class CountingModel(OfflineModel):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        self.calls += 1
        return await super().complete(request, on_text)


async def session_in(rig: Rig, channel: str) -> Session:
    """A session whose root the app posted in `channel` (as /sora does)."""
    session = make_session()
    root = await rig.client.chat_postMessage(
        channel=channel, text=root_text(session), blocks=root_blocks(session)
    )
    session.origin = Origin(
        surface="slack",
        channel_id=channel,
        thread_ts=root["ts"],
        user_id=ALICE,
        user_name="alice",
        team_id=TEAM_ID,
    )
    return session


async def run_worker(rig: Rig, session: Session, surface: SlackSurface, model: Any) -> Session:
    """Create `session` with its first job and run one worker until it finishes."""
    await rig.state.sessions.create(session, enqueue=True)
    finished: list[Session] = []
    stopping = asyncio.Event()

    def on_finished(s: Session) -> None:
        finished.append(s)
        stopping.set()

    worker = Worker(
        state=rig.state,
        engine=Engine(model=model),
        surface=surface,
        config=WorkerConfig(concurrency=4, block_ms=20, drain_s=0.5, reclaim_every_s=60),
        on_finished=on_finished,
    )
    await asyncio.wait_for(worker.run(stopping), timeout=30)
    [final] = finished
    return final


def assert_each_turn_posted_once(rig: Rig, channel: str, session: Session) -> None:
    thread = rig.slack.thread(channel, str(session.origin.thread_ts))
    numbers = [t[1] for m in thread if (t := tag(m)) is not None and t[1] >= 0]
    assert numbers == list(range(len(session.agent_turns)))
    for number, turn in enumerate(session.agent_turns):
        [message] = tagged(thread, number)
        assert message_body(message) == escape(turn.text)
    untagged = [m for m in thread[1:] if m.get("bot_id") and tag(m) is None and not m.get("files")]
    assert untagged == []  # no orphan


async def test_a_lock_in_a_public_channel_the_bot_has_not_joined_joins_it_once(rig: Rig) -> None:
    rig.slack.seed_channel("open", OPEN, bot_member=False)
    session = await session_in(rig, OPEN)
    model = CountingModel()
    final = await run_worker(rig, session, rig.surface(prompts_channel=PROMPTS), model)

    assert final.status == SessionStatus.LOCKED
    assert model.calls == len(final.agent_turns)  # one model call per turn, the last included
    assert len(rig.slack.calls_to("conversations.join")) == 1
    [reply] = tagged(rig.slack.thread(OPEN, str(session.origin.thread_ts)), TURN_LOCKED)
    assert rig.slack.pins(OPEN) == [reply["ts"]]
    assert len(tagged(rig.slack.messages(PROMPTS), TURN_CROSSPOST)) == 1
    [report] = rig.slack.files()
    assert OPEN in report["channels"]
    assert_each_turn_posted_once(rig, OPEN, final)


async def test_a_lock_where_joining_is_refused_still_locks_and_says_how_to_get_the_report(
    rig: Rig,
) -> None:
    rig.slack.seed_channel("open", OPEN, bot_member=False)
    rig.slack.error_next("conversations.join", "missing_scope", k=50)
    session = await session_in(rig, OPEN)
    model = CountingModel()
    final = await run_worker(rig, session, rig.surface(prompts_channel=PROMPTS), model)

    assert final.status == SessionStatus.LOCKED
    assert model.calls == len(final.agent_turns)
    assert await rig.state.library.get(session.id, team=session.origin.team_id) is not None
    assert len(tagged(rig.slack.messages(PROMPTS), TURN_CROSSPOST)) == 1
    assert rig.slack.files() == [] and rig.slack.pins(OPEN) == []
    thread = rig.slack.thread(OPEN, str(session.origin.thread_ts))
    notes = [block_texts(m) for m in thread if (t := tag(m)) is not None and t[1] == -7]
    assert len(notes) == 2  # the pin and the report: one line each, once
    assert any("Invite @Sora Copilot to this channel to get the report here." in n for n in notes)
    assert ":lock: Locked" in block_texts(thread[0])
    assert_each_turn_posted_once(rig, OPEN, final)
    # Shown again (a redo): nothing is tried twice, no second note.
    calls = len(rig.slack.calls)
    await show(rig.surface(prompts_channel=PROMPTS), final, LOCK_STEPS)
    # (The place is asked of Slack again: a channel made private meanwhile counts. The
    # starter's Home tab is refreshed in the background, whenever its window closes.)
    assert [c.method for c in rig.slack.calls[calls:] if c.method != "views.publish"] == [
        "users.info",
        "conversations.info",
        "chat.update",
    ]


async def test_lost_answers_to_posts_leave_no_second_message_and_no_orphan(rig: Rig) -> None:
    session = await rig.session()
    rig.slack.lose_next("chat.postMessage", k=2)  # turn 0's placeholder, then its final post
    model = CountingModel()
    final = await run_worker(rig, session, rig.surface(), model)

    assert final.status == SessionStatus.LOCKED
    assert model.calls == len(final.agent_turns)
    assert sum(1 for c in rig.slack.calls if c.lost) == 2
    assert_each_turn_posted_once(rig, CHANNEL, final)
    assert (await rig.state.posts.get(session.id, 0))[0] == tagged(rig.thread(session), 0)[0]["ts"]


async def test_a_three_minute_429_storm_on_posts_delays_the_session_but_never_pauses_it(
    rig: Rig,
) -> None:
    """Slack time here is the tests' clock: every Retry-After is honoured in full on it
    (3 minutes in all), so the storm takes no real time."""
    session = await rig.session()
    rig.slack.fail_next("chat.postMessage", k=60, status=429, retry_after=3)
    rig.slack.fail_next("files.completeUploadExternal", k=5, status=429, retry_after=3)
    model = CountingModel()
    # As the worker's: every 429 is left to the surface (see bot.cli).
    client = make_client(rig.settings(), sleep=rig.clock.sleep, rate_limit_retries=0)
    surface = SlackSurface(
        client=client,
        state=rig.state,
        settings=rig.settings(prompts_channel=PROMPTS),
        clock=rig.clock,
        sleep=rig.clock.sleep,
    )
    try:
        final = await run_worker(rig, session, surface, model)
    finally:
        await close_client(client)

    assert final.status == SessionStatus.LOCKED and final.error is None
    assert model.calls == len(final.agent_turns)
    assert sum(1 for c in rig.slack.calls if c.status == 429) == 65
    assert sum(s for s in rig.clock.slept if s >= 3.0) >= 180  # every Retry-After waited out
    assert await rig.state.posts.get(session.id, TURN_PAUSED) == {}
    assert await rig.state.queue.dead_letters() == []
    assert_each_turn_posted_once(rig, CHANNEL, final)
    assert len(tagged(rig.thread(session), TURN_LOCKED)) == 1 and len(rig.slack.files()) == 1
    assert len(rig.slack.messages(PROMPTS)) == 1
    # The shared limiter learned each Retry-After the posts met.
    assert len(rig.limiter.held) == 65 and all(s == 3.0 for _, s in rig.limiter.held)


# ---- the update budget decides how a turn is shown -------------------------------------------


async def spend_the_update_budget(surface: SlackSurface) -> None:
    """Take every chat.update call the workspace's budget has for the next minute."""
    while await surface.budget.take_now(surface.poster.workspace):
        pass


async def start_a_turn(surface: SlackSurface, session: Session) -> Any:
    return await surface.turn_started(
        session,
        speaker=session.next_speaker,
        author=COPILOT_NAME,
        turn=session.next_turn,
        round=session.next_round,
        posted={},
    )


def finish_the_turn(session: Session, text: str) -> None:
    session.turns.append(
        Turn(
            index=len(session.turns),
            speaker=session.next_speaker,
            author=COPILOT_NAME,
            text=text,
            round=session.next_round,
        )
    )


async def test_a_turn_with_no_update_budget_is_written_quietly_and_posted_when_saved(
    rig: Rig,
) -> None:
    session = await rig.session()
    surface = rig.surface()
    await spend_the_update_budget(surface)
    sink = await start_a_turn(surface, session)
    assert len(rig.thread(session)) == 1  # no placeholder
    where = (CHANNEL, str(session.origin.thread_ts))
    assert rig.slack.thread_status(*where) == f"{COPILOT_NAME} is writing…"
    await sink.delta("The whole text, at once.")
    finish_the_turn(session, "The whole text, at once.")
    await show(surface, session, [f"{SHOW_TURN}:0"])
    [message] = tagged(rig.thread(session), 0)
    assert message_body(message) == "The whole text, at once."
    assert rig.slack.thread_status(*where) is None  # the post ends the status line
    assert not rig.slack.calls_to("chat.update")


async def test_a_quiet_turn_longer_than_two_minutes_keeps_its_status_line(rig: Rig) -> None:
    """Slack clears a thread's status line two minutes after it was set; a turn written
    for longer sets it again (every STATUS_REFRESH_S), so the thread never looks idle."""
    rig.slack.set_status_clock(rig.clock)
    session = await rig.session()
    surface = rig.surface()
    await spend_the_update_budget(surface)
    sink = await start_a_turn(surface, session)
    where = (CHANNEL, str(session.origin.thread_ts))
    assert len(rig.slack.calls_to("assistant.threads.setStatus")) == 1
    rig.clock.now += STATUS_REFRESH_S / 2
    await sink.delta("Still ")
    assert len(rig.slack.calls_to("assistant.threads.setStatus")) == 1  # not due yet
    rig.clock.now += STATUS_REFRESH_S / 2
    await sink.delta("writing ")
    assert len(rig.slack.calls_to("assistant.threads.setStatus")) == 2
    rig.clock.now += 100  # 190 s into the turn: without the refresh, long cleared
    assert rig.slack.thread_status(*where) == f"{COPILOT_NAME} is writing…"
    rig.clock.now += 30  # and the fake does clear it two minutes after it was set
    assert rig.slack.thread_status(*where) is None


async def test_a_streamed_turn_with_no_update_left_is_posted_anew_and_its_placeholder_deleted(
    rig: Rig,
) -> None:
    session = await rig.session()
    surface = rig.surface()
    sink = await start_a_turn(surface, session)
    [placeholder] = tagged(rig.thread(session), 0)
    assert WRITING in block_texts(placeholder)
    rig.clock.now += 5
    await sink.delta("Half a thought")  # everyone sees it grow, marked as being written
    [grown] = tagged(rig.thread(session), 0)
    assert message_body(grown) == "Half a thought" and WRITING in block_texts(grown)
    await spend_the_update_budget(surface)
    finish_the_turn(session, "Half a thought, and the rest of it.")
    await show(surface, session, [f"{SHOW_TURN}:0"])

    [message] = tagged(rig.thread(session), 0)
    assert message["ts"] != placeholder["ts"]
    assert message_body(message) == "Half a thought, and the rest of it."
    assert WRITING not in block_texts(message)
    assert rig.slack.message(CHANNEL, placeholder["ts"]) is None
    calls = len(rig.slack.calls)
    await show(rig.surface(), session, [f"{SHOW_TURN}:0"])  # again: nothing to do
    assert rig.slack.calls[calls:] == []


@pytest.mark.parametrize("cut", ["between the final post and the delete", "the post's answer"])
async def test_a_replaced_placeholder_cut_short_leaves_one_copy_and_no_placeholder(
    rig: Rig, cut: str
) -> None:
    session = await rig.session()
    surface = rig.surface()
    await start_a_turn(surface, session)
    [placeholder] = tagged(rig.thread(session), 0)
    await spend_the_update_budget(surface)
    finish_the_turn(session, "The final text.")
    if cut == "the post's answer":
        rig.slack.lose_next("chat.postMessage")  # posted, but the answer never came
        await show(surface, session, [f"{SHOW_TURN}:0"])
    else:

        async def killed(channel: str, ts: str) -> None:
            raise RuntimeError("the worker died here")

        surface.poster.delete = killed  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await show(surface, session, [f"{SHOW_TURN}:0"])
        assert rig.slack.message(CHANNEL, placeholder["ts"]) is not None
        await show(rig.surface(), session, [f"{SHOW_TURN}:0"])  # whoever takes it over
    [message] = tagged(rig.thread(session), 0)
    assert message["ts"] != placeholder["ts"] and message_body(message) == "The final text."
    assert rig.slack.message(CHANNEL, placeholder["ts"]) is None
    assert len(rig.thread(session)) == 2  # the root and the turn


def root_updates(rig: Rig, session: Session) -> list[Any]:
    return [
        c for c in rig.slack.calls_to("chat.update") if c.params["ts"] == session.origin.thread_ts
    ]


async def test_a_running_sessions_root_is_coalesced_and_its_final_state_always_lands(
    rig: Rig,
) -> None:
    session = await rig.session(max_rounds=4)
    surface = rig.surface()
    engine = Engine(model=OfflineModel())
    await run_turns(engine, session, surface, n=3)  # three turns within a second
    updates = [
        c for c in rig.slack.calls_to("chat.update") if c.params["ts"] == session.origin.thread_ts
    ]
    assert len(updates) == 1  # the first turn's; the next two came too soon after it
    # The next turn on another worker (its own surface, the same Redis): still too soon.
    await run_turns(engine, session, rig.surface(), n=1)
    updates = [
        c for c in rig.slack.calls_to("chat.update") if c.params["ts"] == session.origin.thread_ts
    ]
    assert len(updates) == 1
    rig.clock.now += ROOT_EVERY_S
    await run_turns(engine, session, surface, n=1)
    updates = [
        c for c in rig.slack.calls_to("chat.update") if c.params["ts"] == session.origin.thread_ts
    ]
    assert len(updates) == 2
    stop(session, by="alice")
    await show(surface, session, steps_after(session))  # at once, however recent the last
    assert "Stopped" in block_texts(rig.root(session))
