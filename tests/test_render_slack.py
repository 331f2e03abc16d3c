"""Render in Slack, in one process: the fake Slack, the fake video APIs and the real Redis.

The ephemeral offer (who may, the cost, the budgets left), Confirm submitting once, the
render job's one progress message in the thread, and the clip uploaded once through the
`upload_clip` step and confirmed with files.info before the done message announces it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.dialogue.models import Origin, Session
from bot.render import make
from bot.render.jobs import RenderRecord, RenderRunner, today
from bot.sessions import Refused, Sessions
from bot.slack.blocks import (
    ACTION_RENDER,
    ACTION_RENDER_CONFIRM,
    locked_parts,
    render_target,
)
from bot.slack.client import close_client, make_client
from bot.slack.renders import TURN_RENDER_PROGRESS, SlackRenderShow, render_ledger
from bot.slack.roots import Roots
from bot.slack.surface import SlackSurface
from state import LibraryEntry, State
from tests.fakes.slack_server import TEAM_ID, FakeSlack
from tests.fakes.video_server import FakeVideoAPI, JobScript
from tests.redis_fixtures import locked, make_session
from tests.test_render_jobs import Clock, load_record, pump

CHANNEL = "C0RENDER"
ADA, GRACE, BOSS = "U0ADA", "U0GRACE", "U0BOSS"  # the starter, a colleague, an admin


class Rig:
    def __init__(self, state: State, slack: FakeSlack, video: FakeVideoAPI) -> None:
        self.state = state
        self.slack = slack
        self.video = video
        self.settings = self.settings_with()
        self.client = make_client(self.settings)
        self.surface = SlackSurface(client=self.client, state=state, settings=self.settings)
        self.sessions = Sessions(state=state, settings=self.settings, slack=Roots(self.client))
        self.clock = Clock()
        self.clips = Path(tempfile.mkdtemp(prefix="sora-clips-"))
        self.runner = self.new_runner()

    def settings_with(self, **kw: Any) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=self.slack.token,
            slack_api_url=self.slack.api_url,
            gemini_api_key=self.video.gemini_key,
            gemini_base_url=self.video.base_url,
            runwayml_api_secret=self.video.runway_secret,
            runwayml_base_url=self.video.base_url,
            **kw,
        )

    def new_runner(self) -> RenderRunner:
        async def surface_for(team: str) -> SlackSurface:
            return self.surface

        return RenderRunner(
            state=self.state,
            show=SlackRenderShow(surface_for),
            renderers=lambda name: make(name, self.settings),
            clock=self.clock,
            clips=self.clips,
        )

    async def session(self, target: str = "sora-2") -> Session:
        """A locked session with its thread root in the fake Slack, stored and in the library."""
        session = locked(make_session(target=target))
        assert session.locked is not None
        draft = session.locked.draft.model_copy(
            update={"size": session.target.sizes[0], "target": target}
        )
        session.locked = session.locked.model_copy(update={"draft": draft})
        root = await self.client.chat_postMessage(channel=CHANNEL, text="a session")
        session.origin = Origin(
            surface="slack",
            channel_id=CHANNEL,
            thread_ts=str(root["ts"]),
            user_id=ADA,
            user_name="ada",
            team_id=TEAM_ID,
        )
        await self.state.sessions.create(session)
        await self.state.library.add(LibraryEntry.from_session(session))
        return session

    async def render(self, session: Session, *, user: str = ADA, tier: str = "draft") -> str:
        """Press Render, then the offer's Confirm; the render's id."""
        rid = await self.offered(session, user=user, tier=tier)
        await self.sessions.renders.confirm(session_id=session.id, user_id=user, tier=tier, rid=rid)
        return rid

    async def offered(self, session: Session, *, user: str = ADA, tier: str = "draft") -> str:
        """Press Render (or Master): the render id its offer's Confirm carries."""
        offer = await self.sessions.renders.offer(session_id=session.id, user_id=user, tier=tier)
        [confirm] = [
            b
            for block in offer.blocks
            if block["type"] == "actions"
            for b in block["elements"]
            if b["action_id"] == ACTION_RENDER_CONFIRM
        ]
        return render_target(confirm["value"])[2]

    async def pump(self, rid: str) -> RenderRecord:
        return await pump(self.state, self.runner, self.clock, rid, team=TEAM_ID)

    async def record(self, rid: str) -> RenderRecord:
        return await load_record(self.state, rid, TEAM_ID)

    def progress(self, session: Session, rid: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.slack.thread(CHANNEL, str(session.origin.thread_ts))
            if (m.get("metadata") or {}).get("event_payload", {}).get("session")
            == render_ledger(rid)
        ]

    def clips_in_thread(self, session: Session) -> list[dict[str, Any]]:
        return [
            f
            for m in self.slack.thread(CHANNEL, str(session.origin.thread_ts))
            for f in m.get("files") or []
            if f["name"].endswith(".mp4")
        ]

    async def close(self) -> None:
        await self.runner.aclose()
        await self.sessions.renders.aclose()
        await close_client(self.client)
        shutil.rmtree(self.clips, ignore_errors=True)


@pytest.fixture
async def rig(real_state: State) -> AsyncIterator[Rig]:
    async with FakeSlack() as slack, FakeVideoAPI() as video:
        slack.seed_channel("render", CHANNEL)
        slack.seed_user(ADA, "ada", display_name="Ada")
        slack.seed_user(GRACE, "grace", display_name="Grace")
        slack.seed_user(BOSS, "boss", is_admin=True, display_name="Boss")
        r = Rig(real_state, slack, video)
        yield r
        await r.close()
        assert slack.internal_errors == []


def text_of(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or message.get("text"), ensure_ascii=False)


@pytest.mark.parametrize(
    ("target", "renderer"), [("veo-3.1", "veo"), ("sora-2", "omni"), ("runway-gen-4.5", "runway")]
)
async def test_render_to_a_clip_in_the_thread_once_confirmed(
    rig: Rig, target: str, renderer: str
) -> None:
    rig.video.script(JobScript("done", checks=3))
    session = await rig.session(target)
    rid = await rig.render(session)
    rec = await rig.record(rid)
    assert rec.plan.renderer == renderer and rec.status == "queued"
    done = await rig.pump(rid)
    assert done.status == "done" and len(rig.video.submissions) == 1
    # ONE progress message, updated in place to its final state.
    [progress] = rig.progress(session, rid)
    assert "Rendered in" in text_of(progress) and progress.get("edited")
    # The clip, once, shared in the thread and confirmed with files.info before that.
    [clip] = rig.clips_in_thread(session)
    assert rig.slack.file_content(clip["id"])[4:8] == b"ftyp"
    assert done.shown["file_id"] == clip["id"]
    methods = [c.method for c in rig.slack.calls]
    assert methods.index("files.info") > methods.index("files.completeUploadExternal")
    last_update = max(i for i, m in enumerate(methods) if m == "chat.update")
    assert last_update > max(i for i, m in enumerate(methods) if m == "files.info")
    # The library entry has the clip's provenance.
    entry = await rig.state.library.get(session.id, team=session.origin.team_id)
    assert entry is not None
    [prov] = entry.renders
    assert (prov.renderer, prov.tier, prov.file_id) == (renderer, "draft", clip["id"])
    assert prov.vendor_job_id == done.vendor_job_id and prov.cost_usd == done.plan.cost


async def test_a_draft_offers_master_with_its_cost_through_the_same_confirmation(
    rig: Rig,
) -> None:
    rig.video.script(JobScript("done", checks=1))
    session = await rig.session("veo-3.1")
    done = await rig.pump(await rig.render(session))
    assert done.master is not None and done.master.tier == "master"
    [progress] = rig.progress(session, done.id)
    [master] = [
        e
        for b in progress["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == ACTION_RENDER
    ]
    assert render_target(master["value"]) == (session.id, "master", "")
    assert f"${done.master.cost:.2f}" in master["text"]["text"]
    offer = await rig.sessions.renders.offer(session_id=session.id, user_id=ADA, tier="master")
    assert done.master.model in offer.blocks[0]["text"]["text"]


async def test_the_locked_reply_has_render_only_when_a_renderer_is_configured(rig: Rig) -> None:
    session = await rig.session("veo-3.1")

    def buttons(settings: Settings) -> list[str]:
        from bot import render
        from bot.render.jobs import target_of

        offered = render.for_slack(target_of(session, settings), settings) is not None
        [*_, last] = locked_parts(session, render=offered)
        return [
            e["action_id"] for b in last.blocks if b["type"] == "actions" for e in b["elements"]
        ]

    assert ACTION_RENDER in buttons(rig.settings)
    bare = Settings(_env_file=None)  # type: ignore[call-arg]
    assert ACTION_RENDER not in buttons(bare)
    offline = Settings(_env_file=None, render_offline_in_slack=True)  # type: ignore[call-arg]
    assert ACTION_RENDER in buttons(offline)


async def test_someone_who_may_not_render_is_refused_and_nothing_is_reserved(rig: Rig) -> None:
    session = await rig.session("veo-3.1")
    with pytest.raises(Refused, match="Only the person who started this session"):
        await rig.sessions.renders.offer(session_id=session.id, user_id=GRACE, tier="draft")
    with pytest.raises(Refused, match="Only the person who started"):
        await rig.sessions.renders.confirm(
            session_id=session.id, user_id=GRACE, tier="draft", rid="0123456789abcdef"
        )
    assert (await rig.state.queue.stats()).backlog == 0
    await rig.render(session, user=BOSS)  # an admin may
    assert (await rig.state.queue.stats()).backlog == 1


async def test_over_the_budget_a_clear_refusal_and_nothing_submitted(rig: Rig) -> None:
    rig.sessions.settings = rig.settings_with(render_budget_seconds_per_user=10)
    session = await rig.session("veo-3.1")
    rid = await rig.render(session)  # 8 s of 10
    with pytest.raises(Refused, match="You cannot render this 8 s clip today"):
        await rig.sessions.renders.offer(session_id=session.id, user_id=ADA, tier="draft")
    # A confirmation shown before the budget was spent is refused at Confirm, atomically
    # (another entry: this one is already rendering).
    other = await rig.session("veo-3.1")
    with pytest.raises(Refused, match="You can render 2 s more of video today"):
        await rig.sessions.renders.confirm(
            session_id=other.id, user_id=ADA, tier="draft", rid="fedcba9876543210"
        )
    await rig.pump(rid)
    assert len(rig.video.submissions) == 1


async def test_a_double_click_on_confirm_submits_once(rig: Rig) -> None:
    rig.video.script(JobScript("done", checks=1))
    session = await rig.session("veo-3.1")
    rid = await rig.render(session)
    again = await rig.sessions.renders.confirm(
        session_id=session.id, user_id=ADA, tier="draft", rid=rid
    )
    assert "already submitted" in again
    await rig.pump(rid)
    assert len(rig.video.submissions) == 1 and len(rig.clips_in_thread(session)) == 1
    t, u = await rig.state.renders.budget_left(
        team=TEAM_ID, user=ADA, day=today(), team_limit=0, user_limit=0
    )
    assert (-t, -u) == (8, 8)


async def test_a_refusal_is_one_line_not_retried_and_refunded(rig: Rig) -> None:
    rig.video.script(JobScript("refused", checks=2, reason="The prompt was blocked\nby a filter."))
    session = await rig.session("veo-3.1")
    done = await rig.pump(await rig.render(session))
    assert done.status == "refused" and len(rig.video.submissions) == 1
    [progress] = rig.progress(session, done.id)
    line = progress["blocks"][0]["text"]["text"]
    assert "refused this prompt" in line and "\n" not in line
    assert not rig.clips_in_thread(session)
    left = await rig.sessions.renders.offer(session_id=session.id, user_id=ADA, tier="draft")
    assert "you 40 s of 40 s" in left.blocks[0]["text"]["text"]


async def test_a_clip_over_the_workspaces_upload_limit_is_said_clearly(rig: Rig) -> None:
    rig.video.script(JobScript("done", checks=1))
    rig.slack.max_upload_bytes = 10
    session = await rig.session("veo-3.1")
    done = await rig.pump(await rig.render(session))
    assert done.status == "done" and done.shown["clip_error"] == "file_upload_size_restricted"
    assert not rig.clips_in_thread(session) and not rig.slack.files()
    [progress] = rig.progress(session, done.id)
    assert "file upload limit" in text_of(progress)


async def test_interim_progress_is_skipped_without_budget_and_the_final_state_lands(
    rig: Rig,
) -> None:
    rig.video.script(JobScript("done", checks=4))
    session = await rig.session("veo-3.1")
    rid = await rig.render(session)
    # Every other chat.update of the workspace has spent the interim share of its budget.
    budget = rig.surface.budget
    while await budget.take(rig.surface.poster.workspace):
        pass
    done = await rig.pump(rid)
    [progress] = rig.progress(session, rid)
    updates = [c for c in rig.slack.calls if c.method == "chat.update"]
    assert len(updates) == 1 and "Rendered in" in text_of(progress)
    assert done.status == "done"
    assert (await rig.state.posts.get(render_ledger(rid), TURN_RENDER_PROGRESS)) == {
        0: progress["ts"]
    }


async def test_pressing_render_twice_offers_one_render_until_it_has_finished(rig: Rig) -> None:
    """Render pressed twice (by the starter, then an admin) shows offers of ONE render:
    confirming both submits once. While it is queued or running a press is told so,
    privately; once it has finished, the entry may be rendered again."""
    rig.video.script(JobScript("done", checks=1), JobScript("done", checks=1))
    session = await rig.session("veo-3.1")
    rid = await rig.offered(session)
    assert await rig.offered(session) == rid
    assert await rig.offered(session, user=BOSS) == rid
    first = await rig.sessions.renders.confirm(
        session_id=session.id, user_id=ADA, tier="draft", rid=rid
    )
    assert first.startswith("Submitted")
    again = await rig.sessions.renders.confirm(
        session_id=session.id, user_id=BOSS, tier="draft", rid=rid
    )
    assert "already submitted" in again
    with pytest.raises(Refused, match="already rendering: see the progress message"):
        await rig.offered(session)
    # A Confirm from an offer made some other way (another id) submits nothing either.
    with pytest.raises(Refused, match="already rendering"):
        await rig.sessions.renders.confirm(
            session_id=session.id, user_id=ADA, tier="draft", rid="0123456789abcdef"
        )
    assert (await rig.state.queue.stats()).backlog == 1
    done = await rig.pump(rid)
    assert done.status == "done" and len(rig.video.submissions) == 1
    t, u = await rig.state.renders.budget_left(
        team=TEAM_ID, user=ADA, day=today(), team_limit=0, user_limit=0
    )
    assert (-t, -u) == (8, 8)
    # Finished: a new press is a new render. Master twice on the done message: one render.
    assert await rig.offered(session) not in ("", rid)
    master = await rig.offered(session, tier="master")
    assert await rig.offered(session, tier="master") == master
    await rig.sessions.renders.confirm(
        session_id=session.id, user_id=ADA, tier="master", rid=master
    )
    with pytest.raises(Refused, match="already rendering"):
        await rig.offered(session, tier="master")
