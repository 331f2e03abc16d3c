"""A surface that records what it would post, in Redis, shared by every process.

It stands in for Slack where a test or benchmark needs to count posts across
worker processes (a killed worker's posts included). Each post is recorded
together with its post-ledger entry in one Lua call, so a redone turn finds
its earlier post and records an update instead of a second post.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn
from bot.render.jobs import clip_size
from bot.surfaces.base import event_steps
from state.keys import Keys
from state.posts import field


class _RecordingSink:
    def __init__(self) -> None:
        self.text = ""

    async def delta(self, text: str) -> None:
        self.text += text

    async def reset(self) -> None:
        self.text = ""


# Record the post and its ledger entry together: one round trip, all or nothing.
_POST = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class RecordingSurface:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._post = redis.register_script(_POST)
        self.steps = event_steps(self)

    async def _event(self, sid: str, **event: Any) -> None:
        await self.redis.rpush(self.keys.recorded(sid), json.dumps(event))

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
        if 0 in posted:
            await self._event(session.id, kind="update", turn=turn, id=posted[0])
            return _RecordingSink()
        message_id = uuid.uuid4().hex[:12]
        event = json.dumps({"kind": "post", "turn": turn, "id": message_id, "author": author})
        await self._post(
            keys=[self.keys.recorded(session.id), self.keys.posts(session.id)],
            args=[event, field(turn, 0), message_id],
        )
        return _RecordingSink()

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        return None

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        await self._event(session.id, kind="heard", source_id=turn.source_id)

    async def session_locked(self, session: Session) -> None:
        await self._event(session.id, kind="locked")

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        await self._event(session.id, kind="waiting", seconds=round(seconds, 3))

    async def session_paused(self, session: Session) -> None:
        await self._event(session.id, kind="paused", error=session.error)

    async def session_stopped(self, session: Session) -> None:
        await self._event(session.id, kind="stopped")


async def recorded(redis: Redis, keys: Keys, sid: str) -> list[dict[str, Any]]:
    raw = await redis.lrange(keys.recorded(sid), 0, -1)
    return [json.loads(r) for r in raw]


# A delivery is recorded with its ledger entry in one call, and only once: a redone
# deliver step (its worker died before saving it was done) finds the first one.
_DELIVER = """
local done = redis.call('HGET', KEYS[2], 'deliver')
if done then return done end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'deliver', ARGV[2])
return ARGV[2]
"""


class RecordingRenderShow:
    """What a render would show in Slack, recorded under `recorded("render-<rid>")`."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._deliver = redis.register_script(_DELIVER)

    async def show(self, step: str, record: Any, clip: Path | None) -> dict[str, str]:
        name = f"render-{record.id}"
        if step == "deliver":
            file_id = "F" + uuid.uuid4().hex[:10].upper()
            size = clip_size(clip) if clip is not None else 0
            event = json.dumps({"kind": "clip", "bytes": size, "file_id": file_id})
            kept = await self._deliver(
                keys=[self.keys.recorded(name), self.keys.posts(name)], args=[event, file_id]
            )
            return {"file_id": str(kept)}
        progress = {"kind": "progress", "status": record.status, "vendor": record.vendor_status}
        await self.redis.rpush(self.keys.recorded(name), json.dumps(progress))
        return {}
