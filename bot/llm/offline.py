"""A deterministic offline model: a whole plausible session with no network.

It writes each agent's reply from the engine's brief (idea, persona, round,
latest draft, what was just said), as the same JSON a real model returns, and
streams it in small chunks through the same path. Everything it writes says
that it is offline: every message starts with a marker and every draft title
ends with one. Same inputs, same outputs, so tests and benchmarks can rely on
it; `latency` makes each call take that long, for load benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from bot.dialogue.models import Usage
from bot.llm.base import ModelReply, ModelRequest, TextCallback

OFFLINE_MODEL = "offline-deterministic"
OFFLINE_MARK = "_(offline model)_"
CHUNK_CHARS = 24
_ASK = re.compile(r"I need (.+?)\.(?:\s|$)")


class OfflineModel:
    def __init__(self, *, latency: float = 0.0, revisions_before_approval: int = 2):
        self.latency = latency
        self.revisions_before_approval = revisions_before_approval

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
            for i in range(0, len(text), CHUNK_CHARS):
                await on_text(text[i : i + CHUNK_CHARS])
        prompt_chars = len(request.system) + sum(len(m.content) for m in request.messages)
        usage = Usage(input_tokens=prompt_chars // 4, output_tokens=max(len(text) // 4, 1))
        return ModelReply(text=text, stop_reason="end_turn", usage=usage, model=OFFLINE_MODEL)

    def write(self, request: ModelRequest) -> str:
        """The reply's JSON text for `request`, the same every time."""
        brief = request.brief
        payload = self._copilot(brief) if request.agent == "copilot" else self._persona(brief)
        return json.dumps(payload, ensure_ascii=False)

    # ---- the Copilot -------------------------------------------------------------------

    def _copilot(self, brief: dict[str, Any]) -> dict[str, Any]:
        idea: str = brief["idea"]
        persona = brief["persona"]
        latest = brief.get("latest_draft")
        heard: list[dict[str, str]] = brief.get("heard", [])
        humans = [h for h in heard if h["speaker"] == "human"]
        asks = [
            m.group(1) for h in heard if h["speaker"] == "persona" for m in _ASK.finditer(h["text"])
        ]
        first = persona["display_name"].split()[0]
        if latest is None:
            extras: list[str] = []
            message = (
                f"{OFFLINE_MARK} Hi {first}. Before we polish anything: what should the viewer "
                f"feel in the first second, and what is the one image they should remember? "
                f"Here is a first draft to react to, built straight from the idea."
            )
        else:
            extras = list(latest["parts"]["action_beats"][3:])
            changes = [a[0].upper() + a[1:] for a in asks]
            changes += [f"{h['author']}'s note: {h['text']}" for h in humans]
            extras.extend(changes)
            said = "; ".join(asks) if asks else "a tighter final beat"
            message = f"{OFFLINE_MARK} Done: v{latest['version'] + 1} now has {said}."
        for h in humans:
            message += f" @{h['author']}: good call, it is in the draft."
        if brief["round"] >= brief["max_rounds"]:
            message += " This is my final draft."
        return {"message": message, "draft": _draft(idea, brief["target"], extras)}

    # ---- the persona -------------------------------------------------------------------

    def _persona(self, brief: dict[str, Any]) -> dict[str, Any]:
        persona = brief["persona"]
        latest = brief["latest_draft"]
        revisions: int = brief.get("persona_revisions", 0)
        final = brief["round"] >= brief["max_rounds"]
        humans = [h for h in brief.get("heard", []) if h["speaker"] == "human"]
        replies = "".join(
            f" {h['author']}, noted: keep it if it serves the ending." for h in humans
        )
        ready = brief["pushed_back"] and (revisions >= self.revisions_before_approval or final)
        if latest is not None and ready:
            return {
                "message": f"{OFFLINE_MARK} v{latest['version']} is the one. Lock it.{replies}",
                "verdict": {"decision": "approve", "version": latest["version"]},
            }
        must: list[str] = persona["must_haves"]
        ask = must[revisions % len(must)] if must else "a clearer final beat"
        opener = "Close, but not yet." if latest is not None else "Not yet."
        return {
            "message": f"{OFFLINE_MARK} {opener} I need {ask}.{replies}",
            "verdict": {"decision": "revise", "version": None},
        }


def _draft(idea: str, target: dict[str, Any], extras: list[str]) -> dict[str, Any]:
    subject = idea.strip().rstrip(".")
    if len(subject) > 300:
        subject = subject[:299].rstrip() + "…"
    durations: list[int] = target["durations"]
    duration = durations[len(durations) // 2]
    size: str = target["sizes"][0]
    beats = [
        "Open close on the subject, mid-gesture, as if the camera arrived a moment late",
        "The camera eases back to reveal the wider scene and what is at stake",
        "Final beat: one still, quiet image that holds for a full second",
        *extras,
    ]
    parts = {
        "subject": subject,
        "setting": "a real, lived-in place that grounds the idea, late afternoon",
        "action_beats": beats,
        "camera": "35mm lens at eye level, a slow push-in, then a gentle pull-back",
        "lighting_palette": "low warm sun through a window with soft fill; amber, teal and cream",
        "sound": "room tone and one clear diegetic sound, a soft swell on the final beat",
        "style": "cinematic realism with natural film grain",
        "avoid": ["on-screen text", "logos", "distorted hands or faces"],
    }
    prompt = (
        f"{subject}. Setting: {parts['setting']}. "
        + " ".join(f"{b}." for b in beats)
        + f" Camera: {parts['camera']}. Lighting and palette: {parts['lighting_palette']}."
        f" Sound: {parts['sound']}. Style: {parts['style']}."
        f" Duration {duration} seconds, {size}. Avoid: {', '.join(parts['avoid'])}."
    )
    title = subject if len(subject) <= 60 else subject[:59].rstrip() + "…"
    return {
        "title": f"{title} (offline)",
        "prompt_text": prompt,
        "duration_seconds": duration,
        "size": size,
        "parts": parts,
    }
