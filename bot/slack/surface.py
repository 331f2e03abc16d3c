"""The Slack surface: a session is a thread, each turn one or more messages in it.

Decide, save, then show. While the model writes a turn, its live message is
shown best effort (`bot.slack.live`); nothing there can fail the turn. Once
the turn is saved, the worker runs the saved steps (the outbox, see
`bot.driver`), each a named function of `bot.slack.steps` that this surface
offers in its `steps` table. Every Slack call goes through one `Poster`
(`bot.slack.poster`): tags, the post ledger, finding posts again, the
per-channel post rate, 429s and the workspace's chat.update budget.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.agents import COPILOT_ICON
from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker
from bot.slack.access import Access
from bot.slack.blocks import USERNAME_MAX_CHARS, MessagePart, root_blocks, root_text, truncate
from bot.slack.errors import SLACK_OR_CONNECTION
from bot.slack.home import HomeRefresher, HomeTab
from bot.slack.live import WRITING_STATUS, LiveMessage, interim_client_of
from bot.slack.people import People
from bot.slack.poster import WORKSPACE, Clock, Poster, Sleep, thread_of
from bot.slack.privacy import LockDecision, Places
from bot.slack.steps import STEPS
from bot.surfaces.base import Step, waiting_notice
from state import State
from state.updates import RootWindows, UpdateBudget

log = logging.getLogger("sora.slack")

# A running session's root shows its round and tokens at most this often; the states in
# between may be skipped, never the last (locked, paused, stopped).
ROOT_EVERY_S = 5.0


class SlackSurface:
    """Shows sessions in their Slack threads. One instance serves every session of a process."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        state: State,
        settings: Settings,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        people: People | None = None,
        workspace: str = WORKSPACE,
        wall_clock: Clock = time.time,
    ):
        """`clock` times this process's waits; `wall_clock` what every worker compares
        (the root's coalescing window, kept in Redis)."""
        self.client = client
        self.state = state
        self.settings = settings
        self.people = people or People(client)
        self.places = Places()  # what kind of place each channel is (conversations.info)
        # A session's starter sees its lock or pause on their Home tab too (coalesced).
        self.home = HomeRefresher(
            HomeTab(state, access=Access(places=self.places)),
            people=self.people,
            settings=settings,
            sleep=sleep,
        )
        self.lock_decisions: dict[str, LockDecision] = {}  # session id -> where its lock goes
        # Slack's Tier 3: chat.update calls a minute for the whole workspace (this app's one
        # bot token), shared by every worker through Redis.
        self.budget = UpdateBudget(
            state.redis, state.keys, per_minute=settings.slack_updates_per_minute, sleep=sleep
        )
        self.poster = Poster(
            client=client,
            state=state,
            budget=self.budget,
            delete_budget=UpdateBudget(
                state.redis, state.keys, per_minute=settings.slack_updates_per_minute, sleep=sleep
            ),
            workspace=workspace,
            clock=clock,
            sleep=sleep,
        )
        # Interim updates run inside the model's stream: one attempt each, no retry.
        self.interim_client = interim_client_of(client)
        self._live: dict[str, LiveMessage] = {}  # session id -> the turn being written
        # A running session's root: at most one update every ROOT_EVERY_S, on any worker.
        self.root_windows = RootWindows(state.redis, state.keys)
        self.wall_clock = wall_clock
        self.steps: Mapping[str, Step] = {
            name: functools.partial(step, self) for name, step in STEPS.items()
        }

    # ---- while the model writes: best effort, outside the outbox ------------------------

    async def turn_started(
        self,
        session: Session,
        *,
        speaker: Speaker,
        author: str,
        turn: int,
        round: int,
        posted: Mapping[int, str],
        redo: bool = False,
    ) -> TurnSink:
        where = thread_of(session)
        icon = COPILOT_ICON if speaker == Speaker.COPILOT else session.persona.icon_emoji
        live = LiveMessage(
            self.poster,
            self.interim_client,
            session_id=session.id,
            where=where,
            turn=turn,
            username=truncate(author, USERNAME_MAX_CHARS),
            icon=icon,
            parts=posted,
        )
        self._live[session.id] = live
        if 0 not in live.parts and redo:
            # An earlier attempt may have posted without recording it (its worker died).
            try:
                live.parts.update(await self.poster.find_tagged(session.id, where, turn))
            except SLACK_OR_CONNECTION as e:
                log.info(
                    "session %s: cannot look for turn %s's message now: %s", session.id, turn, e
                )
                live.unknown = True
                await live.set_status(WRITING_STATUS)
                return live  # no placeholder: the final render looks again
        await live.start()
        return live

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        """While the engine waits out a Claude outage: shown on the root (best effort), and
        the thread's status line kept up (Slack clears it after two minutes)."""
        live = self._live.get(session.id)
        if live is not None:
            await live.refresh_status()
        where = thread_of(session)
        part = MessagePart(
            tail=tuple(root_blocks(session, notice=waiting_notice(seconds, status))),
            fallback=root_text(session),
        )
        try:
            await self.poster.update(where.channel, where.ts, part)
        except SLACK_OR_CONNECTION as e:
            log.info("session %s: cannot show the wait on the root: %s", session.id, e)

    # ---- the live messages of this process ------------------------------------------------

    def take_live(self, session_id: str, turn: int | None = None) -> LiveMessage | None:
        """The live message of `session_id` (of agent turn `turn`, if given), no longer live."""
        live = self._live.get(session_id)
        if live is None or (turn is not None and live.turn != turn):
            return None
        return self._live.pop(session_id)

    async def root_due(self, session_id: str) -> bool:
        """Whether a running session's root may be updated now, claiming the window if so:
        at most once every ROOT_EVERY_S seconds, whichever worker asks (the last state
        it shows is its own, final, update, which does not ask)."""
        return await self.root_windows.claim(
            session_id, now=self.wall_clock(), every_s=ROOT_EVERY_S
        )

    async def abandon_live(self, session_id: str) -> None:
        live = self.take_live(session_id)
        if live is not None:
            await live.abandon()
