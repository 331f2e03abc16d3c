"""What a second of rendered video costs: one price table, like bot.llm.prices for tokens.

USD per second of output, by the vendor's model id and output resolution ("" when the
model has one price). A model or resolution the table does not know has no estimate (None)
rather than a guessed one.

Sources, read 2026-12-03:
- Veo 3.1 on the Gemini API, audio included: ai.google.dev/gemini-api/docs/pricing, as quoted
  by reapi.ai/blog/cheapest-veo-3-1-api-2026 (Standard $0.40 at 720p/1080p, $0.60 at 4k;
  Fast $0.10 at 720p, $0.12 at 1080p, $0.30 at 4k) and lumenfall.ai/models/google/veo-3.1-lite
  (Lite $0.05 at 720p, $0.08 at 1080p, no 4k). Second-hand: the vendor page itself was not
  reachable from here.
- Gemini Omni Flash: $0.039 a second at 360p and $0.39 at 4k (the Render issue's figures,
  second-hand); $0.10 at 720p (docs.gmicloud.ai, gemini-omni-flash-preview, second-hand).
  1080p has no published figure here, so it has no estimate.
- Runway gen4.5: 12 credits a second at $0.01 a credit (docs.dev.runwayml.com pricing, as
  quoted in the Render issue). The API reports each task's real cost in credits
  (`estimatedCost.credits`, `cost.credits`: runwayml `types/task_retrieve_response.py`).
"""

from __future__ import annotations

RUNWAY_USD_PER_CREDIT = 0.01

PER_SECOND: dict[tuple[str, str], float] = {
    ("veo-3.1-generate-preview", "720p"): 0.40,
    ("veo-3.1-generate-preview", "1080p"): 0.40,
    ("veo-3.1-generate-preview", "4k"): 0.60,
    ("veo-3.1-fast-generate-preview", "720p"): 0.10,
    ("veo-3.1-fast-generate-preview", "1080p"): 0.12,
    ("veo-3.1-fast-generate-preview", "4k"): 0.30,
    ("veo-3.1-lite-generate-preview", "720p"): 0.05,
    ("veo-3.1-lite-generate-preview", "1080p"): 0.08,
    ("gemini-omni-1.1-flash", "360p"): 0.039,
    ("gemini-omni-1.1-flash", "720p"): 0.10,
    ("gemini-omni-1.1-flash", "4k"): 0.39,
    ("gen4.5", ""): 12 * RUNWAY_USD_PER_CREDIT,
}


def price_per_second(model: str, resolution: str) -> float | None:
    """USD a second of `model` at `resolution`, or None when the table does not know it."""
    if model.startswith("offline"):
        return 0.0
    found = PER_SECOND.get((model, resolution))
    return found if found is not None else PER_SECOND.get((model, ""))
