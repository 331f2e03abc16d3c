"""The offline renderer's time for an 8 s clip: `python -m bench.render_offline`.

Renders a locked 8-second sora-2 draft (1280x720, three beats) as title cards, at the
draft tier (640x360) and the master tier (1280x720), several times each, and prints the
median and worst wall time per clip, the clip's size, and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from bot.dialogue.models import Draft
from bot.dialogue.profiles import resolve_target
from bot.render.base import Done
from bot.render.offline import OfflineRenderer
from tests.support import draft_json


async def main(runs: int) -> None:
    draft = Draft.model_validate({"version": 1, "target": "sora-2", **draft_json(duration=8)})
    target = resolve_target("sora-2")
    renderer = OfflineRenderer()
    rows = []
    for tier in ("draft", "master"):
        plan = renderer.plan(draft, target, tier)
        times, size = [], 0
        for _ in range(runs):
            start = time.perf_counter()
            outcome = await renderer.check(plan, await renderer.submit(plan))
            times.append(time.perf_counter() - start)
            assert isinstance(outcome, Done)
            size = len(outcome.video)
        row = {
            "tier": tier,
            "frame": plan.size,
            "seconds": plan.seconds,
            "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
            "bytes": size,
        }
        rows.append(row)
        print(
            f"{tier:6} {plan.size:>9}: an {plan.seconds} s clip in {row['median_s']:.2f} s "
            f"(worst {row['max_s']:.2f} s), {size / 1024:.0f} KiB"
        )
    print(json.dumps({"offline_render": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
