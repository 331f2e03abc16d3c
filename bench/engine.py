"""Engine overhead per turn: `python -m bench.engine`.

Runs 6-round sessions (the persona never approves, so every session runs to
the round limit: 13 turns) on the offline model and on the fake Anthropic
server with zero latency, and prints the engine's own time per turn (model
time excluded: the engine subtracts the time spent inside the model call) and
the process's peak RSS. Targets: at most 2 ms per turn, at most 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
from typing import Any

from bot.dialogue.engine import Engine
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target
from bot.llm.anthropic_model import AnthropicModel
from bot.llm.base import ChatModel, ModelRequest
from bot.llm.offline import OfflineModel
from tests.fakes.anthropic_server import FakeAnthropic


class _NullSink:
    async def delta(self, text: str) -> None:
        return None

    async def reset(self) -> None:
        return None


def _new_session() -> Session:
    return Session(
        idea="A lighthouse keeper finds a message in a bottle, written in his own hand",
        persona=resolve_persona("director"),
        target=resolve_target("sora-2"),
        max_rounds=6,
    )


async def _run(model: ChatModel, sessions: int) -> list[float]:
    engine = Engine(model=model)
    sink = _NullSink()
    times: list[float] = []
    for _ in range(sessions):
        session = _new_session()
        while session.status == SessionStatus.RUNNING:
            result = await engine.take_turn(session, sink)
            times.append(result.engine_seconds * 1000)
        assert session.locked is not None, session.error
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _report(name: str, times: list[float]) -> dict[str, Any]:
    row = {
        "path": name,
        "turns": len(times),
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(_pct(times, 0.95), 3),
    }
    print(
        f"{name:<22} turns={row['turns']:<5} engine median {row['median_ms']:.3f} ms  "
        f"p95 {row['p95_ms']:.3f} ms"
    )
    return row


async def main(sessions: int) -> None:
    offline = OfflineModel(revisions_before_approval=99)
    rows = [_report("offline model", await _run(offline, sessions))]

    # The fake server answers with what the offline model would say, at zero latency.
    async with FakeAnthropic() as fake:

        def respond(body: dict[str, Any]) -> str:
            return _offline_reply(offline, body)

        fake.responder = respond
        model = AnthropicModel(
            api_key=fake.api_key, model="claude-sonnet-5-5", base_url=fake.base_url
        )
        _CONTEXT.clear()
        rows.append(_report("fake Anthropic server", await _run(_Briefing(model), sessions)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mb:.1f} MB (targets: <= 2 ms per turn, <= 150 MB)")
    print(json.dumps({"rows": rows, "peak_rss_mb": round(rss_mb, 1)}))


# The fake server only sees the HTTP request; the offline model needs the engine's brief.
# This wrapper hands the brief over beside the request so the fake can answer like it.
_CONTEXT: list[ModelRequest] = []


class _Briefing:
    def __init__(self, inner: ChatModel):
        self.inner = inner

    @property
    def offline(self) -> bool:
        return False

    async def complete(self, request: ModelRequest, on_text: Any = None) -> Any:
        _CONTEXT.append(request)
        return await self.inner.complete(request, on_text)


def _offline_reply(offline: OfflineModel, body: dict[str, Any]) -> str:
    return offline.write(_CONTEXT[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=40)
    asyncio.run(main(parser.parse_args().sessions))
