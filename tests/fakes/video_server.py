"""Fake video APIs on loopback: Google's Gemini API (Veo and Omni) and Runway's.

The renderers reach it through each SDK's own base-URL setting: google-genai's
``HttpOptions(base_url=…)`` (the ``GEMINI_BASE_URL`` setting) and runwayml's ``base_url``
(``RUNWAYML_BASE_URL``). One server serves both; their paths do not overlap.

What it imitates, with the shapes read in the SDKs' source (google-genai 2.34.0, runwayml
5.24.0, site-packages) and the vendors' docs:

* Veo, ``POST /v1beta/models/{model}:predictLongRunning`` with ``{"instances": [{"prompt"}],
  "parameters": {"sampleCount", "durationSeconds", "aspectRatio", "resolution",
  "negativePrompt"}}`` (models.py ``_GenerateVideosParameters_to_mldev``): answers
  ``{"name": "models/{model}/operations/{id}"}``. Durations 4, 6 or 8; 16:9 or 9:16;
  720p, 1080p or 4k, the last two only at 8 s (ai.google.dev/gemini-api/docs/video): anything
  else is a 400 ``INVALID_ARGUMENT``. ``GET /v1beta/{name}`` answers the operation:
  ``done`` once the job has run, then ``response.generateVideoResponse`` with
  ``generatedSamples[].video.uri``
  (``https://generativelanguage.googleapis.com/v1beta/files/{id}:download?alt=media``, which
  the SDK turns into ``files/{id}:download`` on its base URL: _transformers.py
  ``t_file_name``), or a refusal (no samples, ``raiMediaFilteredCount``,
  ``raiMediaFilteredReasons``), or ``error {code, message}``.
* Omni, ``POST /v1beta/interactions`` (``model``, ``input``, ``background``,
  ``response_format``) and ``GET /v1beta/interactions/{id}``: statuses ``queued``,
  ``in_progress``, then ``completed`` with a ``model_output`` step whose content holds
  ``{"type": "video", "mime_type": "video/mp4", "data": base64}``, or ``failed`` with
  ``errors [{code, message}]``, or ``cancelled`` (_gaos/types/interactions/interaction.py).
* The Gemini API key in ``x-goog-api-key``; a wrong one is a 400 ``API_KEY_INVALID`` as
  Google answers. Errors in Google's shape ``{"error": {"code", "message", "status"}}``.
* Runway, ``POST /v1/text_to_video`` (``model: gen4.5``, ``promptText`` of at most 1,000
  UTF-16 code units, ``ratio`` 1280:720 or 720:1280, ``duration`` 2 to 10): answers
  ``{"id", "estimatedCost": {"credits"}}``; ``GET /v1/tasks/{id}`` answers ``PENDING``,
  ``THROTTLED`` (while the account's concurrency is full), ``RUNNING`` with ``progress``,
  ``SUCCEEDED`` with ``output`` URLs, ``FAILED`` with ``failure``, ``failureCode`` and
  ``cost``, or ``CANCELLED`` (types/task_retrieve_response.py). ``Authorization: Bearer``
  must carry the secret (401 otherwise) and ``X-Runway-Version`` must be sent (400), as the
  API requires (_client.py sends both). Errors are ``{"error": "…"}``.
* Injectable: :meth:`FakeVideoAPI.script` sets how the next jobs end (done, refused, failed,
  cancelled), after how many checks, with how many throttled checks first;
  :meth:`FakeVideoAPI.rate_limit` answers the next n requests with 429 (``Retry-After``);
  ``delay_s`` slows every answer.

Recorded: ``submissions`` (every accepted job, in order, with its API and body), ``checks``
(status requests per job id), ``downloads``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from bot.render.offline import Card, encode
from tests.fakes.loopback import LoopbackServer

Ending = Literal["done", "refused", "failed", "cancelled"]
VEO_MODELS = (
    "veo-3.1-generate-preview",
    "veo-3.1-fast-generate-preview",
    "veo-3.1-lite-generate-preview",
)
OMNI_MODELS = ("gemini-omni-1.1-flash", "gemini-omni-flash-preview")
# googleapis/js-genai#1272: the flaky audio filter's words.
VEO_AUDIO_REFUSAL = (
    "We encountered an issue with the audio for your prompt, which means we could not create "
    "your video. This can sometimes happen due to our safety filters or other processing "
    "issues. Please modify your request and try again. You have not been charged for this "
    "attempt."
)
VEO_POLICY_REFUSAL = (
    "Your prompt was blocked by our safety filters because it may violate our usage "
    "guidelines. You have not been charged for this attempt."
)


@dataclass
class JobScript:
    """How one job ends, and when: after `checks` status requests (the last answers the end),
    the first `throttled` of them THROTTLED on Runway."""

    ending: Ending = "done"
    checks: int = 2
    throttled: int = 0
    reason: str = ""
    code: str = ""  # Runway's failureCode
    credits_charged: int | None = None  # Runway's cost.credits on a failure


@dataclass
class Job:
    api: Literal["veo", "omni", "runway"]
    id: str
    body: dict[str, Any]
    script: JobScript
    seconds: int
    checks: int = 0
    file_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The vendor's time, for benchmarks: when the job was made, and when a check first
    # answered its end (time.monotonic()).
    created_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.checks >= self.script.checks

    def checked(self) -> None:
        """One more status request; the first that reaches the end stamps `finished_at`."""
        self.checks += 1
        if self.finished and self.finished_at is None:
            self.finished_at = time.monotonic()


def tiny_clip() -> bytes:
    """A real, playable one-second MP4, small enough to serve as every fake clip."""
    card = Card(caption="fake", number=1, count=1, beat="fake clip", camera="-", light="-")
    return encode([card], 1, 64, 36, fps=4)


class FakeVideoAPI(LoopbackServer):
    def __init__(
        self,
        *,
        gemini_key: str = "fake-gemini-key",
        runway_secret: str = "fake-runway-secret",
        host: str = "127.0.0.1",
        port: int = 0,
        delay_s: float = 0.0,
        clip: bytes | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.gemini_key, self.runway_secret = gemini_key, runway_secret
        self.delay_s = delay_s
        self.clip = clip if clip is not None else tiny_clip()
        self.jobs: dict[str, Job] = {}
        self.submissions: list[Job] = []
        self.downloads: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._scripts: list[JobScript] = []
        self._default = JobScript()
        self._rate_limited = 0
        self.retry_after_s = 1
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- steering ----------------------------------------------------------------------

    def script(self, *jobs: JobScript, default: JobScript | None = None) -> None:
        """The next jobs end as `jobs` say, in order; later ones as `default` (done)."""
        self._scripts.extend(jobs)
        if default is not None:
            self._default = default

    def rate_limit(self, n: int, *, retry_after_s: int = 1) -> None:
        """The next `n` requests to either API answer 429."""
        self._rate_limited = n
        self.retry_after_s = retry_after_s

    def checks_of(self, job_id: str) -> int:
        return self.jobs[job_id].checks

    # ---- the app -----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=2**20)
        r = app.router
        r.add_post("/v1beta/models/{model}:predictLongRunning", self._veo_create)
        r.add_get("/v1beta/models/{model}/operations/{op}", self._veo_get)
        r.add_get("/v1beta/files/{file}:download", self._gemini_download)
        r.add_post("/v1beta/interactions", self._omni_create)
        r.add_get("/v1beta/interactions/{id}", self._omni_get)
        r.add_post("/v1/text_to_video", self._runway_create)
        r.add_get("/v1/tasks/{id}", self._runway_get)
        r.add_get("/_fake/runway-output/{id}.mp4", self._runway_output)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        google = request.path.startswith("/v1beta/")
        if google and request.headers.get("x-goog-api-key") != self.gemini_key:
            return _google_error(
                400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"
            )
        if request.path.startswith("/v1/"):
            if request.headers.get("Authorization") != f"Bearer {self.runway_secret}":
                return web.json_response({"error": "Invalid API key"}, status=401)
            if not request.headers.get("X-Runway-Version"):
                return web.json_response(
                    {"error": "The X-Runway-Version header is required"}, status=400
                )
        if self._rate_limited > 0 and not request.path.startswith("/_fake/"):
            self._rate_limited -= 1
            headers = {"Retry-After": str(self.retry_after_s)}
            if google:
                response = _google_error(
                    429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"
                )
                response.headers.update(headers)
                return response
            return web.json_response(
                {"error": "You have exceeded your rate limit"}, status=429, headers=headers
            )
        result: web.StreamResponse = await handler(request)
        return result

    def _next_script(self) -> JobScript:
        return self._scripts.pop(0) if self._scripts else self._default

    def _new_job(self, api: Literal["veo", "omni", "runway"], body: dict[str, Any], s: int) -> Job:
        n = next(self._ids)
        job = Job(api=api, id=f"{api}{n:06d}", body=body, script=self._next_script(), seconds=s)
        job.file_id = f"f{n:06d}video"
        self.jobs[job.id] = job
        self.submissions.append(job)
        return job

    # ---- Veo ---------------------------------------------------------------------------

    async def _veo_create(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in VEO_MODELS:
            return _google_error(404, f"models/{model} is not found", "NOT_FOUND")
        body = await _json(request)
        instances = body.get("instances") or [{}]
        params = body.get("parameters") or {}
        prompt = instances[0].get("prompt")
        seconds = params.get("durationSeconds", 8)
        problem = None
        if not isinstance(prompt, str) or not prompt.strip():
            problem = "A prompt is required."
        elif seconds not in (4, 6, 8):
            problem = "durationSeconds must be 4, 6 or 8."
        elif params.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
            problem = "aspectRatio must be 16:9 or 9:16."
        elif params.get("resolution", "720p") not in ("720p", "1080p", "4k"):
            problem = "resolution must be 720p, 1080p or 4k."
        elif params.get("resolution") in ("1080p", "4k") and seconds != 8:
            problem = "1080p and 4k need an 8 second duration."
        elif "seed" in params or "generateAudio" in params:
            problem = "seed and generateAudio are not supported by the Gemini API."
        if problem:
            return _google_error(400, problem, "INVALID_ARGUMENT")
        job = self._new_job("veo", body, int(seconds))
        return web.json_response({"name": f"models/{model}/operations/{job.id}"})

    async def _veo_get(self, request: web.Request) -> web.Response:
        model, op = request.match_info["model"], request.match_info["op"]
        job = self.jobs.get(op)
        if job is None or job.api != "veo":
            return _google_error(404, f"Operation {op} not found", "NOT_FOUND")
        job.checked()
        name = f"models/{model}/operations/{op}"
        if not job.finished:
            return web.json_response({"name": name})
        s = job.script
        if s.ending == "done":
            uri = (
                f"https://generativelanguage.googleapis.com/v1beta/files/{job.file_id}"
                ":download?alt=media"
            )
            payload: dict[str, Any] = {"generatedSamples": [{"video": {"uri": uri}}]}
        elif s.ending == "refused":
            payload = {
                "raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": [s.reason or VEO_POLICY_REFUSAL],
            }
        else:
            return web.json_response(
                {
                    "name": name,
                    "done": True,
                    "error": {"code": 13, "message": s.reason or "Internal error."},
                }
            )
        return web.json_response(
            {
                "name": name,
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                    "PredictLongRunningResponse",
                    "generateVideoResponse": payload,
                },
            }
        )

    async def _gemini_download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file"]
        if request.query.get("alt") != "media":
            return _google_error(400, "alt=media is required", "INVALID_ARGUMENT")
        if not any(j.file_id == file_id for j in self.jobs.values()):
            return _google_error(404, f"File {file_id} not found", "NOT_FOUND")
        self.downloads.append(file_id)
        return web.Response(body=self.clip, content_type="video/mp4")

    # ---- Omni --------------------------------------------------------------------------

    async def _omni_create(self, request: web.Request) -> web.Response:
        body = await _json(request)
        model = body.get("model")
        if model not in OMNI_MODELS:
            return _google_error(404, f"models/{model} is not found", "NOT_FOUND")
        fmt = body.get("response_format") or {}
        duration = str(fmt.get("duration", "8s"))
        problem = None
        if not body.get("background"):
            problem = "Video generation needs background=true."
        elif fmt.get("type") != "video":
            problem = "response_format.type must be video."
        elif fmt.get("aspect_ratio", "16:9") not in ("16:9", "9:16"):
            problem = "aspect_ratio must be 16:9 or 9:16."
        elif fmt.get("resolution", "720p") not in ("360p", "720p", "1080p", "4k"):
            problem = "resolution must be 360p, 720p, 1080p or 4k."
        elif not duration.endswith("s") or not duration[:-1].isdigit():
            problem = "duration must be a number of seconds, like 8s."
        elif not 3 <= int(duration[:-1]) <= 10:
            problem = "duration must be 3 to 10 seconds."
        if problem:
            return _google_error(400, problem, "INVALID_ARGUMENT")
        job = self._new_job("omni", body, int(duration[:-1]))
        return web.json_response(self._interaction(job, "in_progress"))

    def _interaction(self, job: Job, status: str, **more: Any) -> dict[str, Any]:
        return {
            "id": job.id,
            "status": status,
            "model": job.body.get("model"),
            "created": "2026-12-03T12:00:00Z",
            "updated": "2026-12-03T12:00:00Z",
            **more,
        }

    async def _omni_get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.api != "omni":
            return _google_error(404, "Interaction not found", "NOT_FOUND")
        job.checked()
        if not job.finished:
            status = "queued" if job.checks == 1 else "in_progress"
            return web.json_response(self._interaction(job, status))
        s = job.script
        if s.ending == "done":
            video = {
                "type": "video",
                "mime_type": "video/mp4",
                "data": base64.b64encode(self.clip).decode(),
            }
            self.downloads.append(job.id)
            steps = [{"type": "model_output", "content": [video]}]
            return web.json_response(self._interaction(job, "completed", steps=steps))
        if s.ending == "cancelled":
            return web.json_response(self._interaction(job, "cancelled"))
        code = "safety" if s.ending == "refused" else "internal"
        message = s.reason or (
            "The prompt was blocked by safety filters."
            if s.ending == "refused"
            else "Internal error."
        )
        errors = [{"code": code, "message": message}]
        return web.json_response(self._interaction(job, "failed", errors=errors))

    # ---- Runway ------------------------------------------------------------------------

    async def _runway_create(self, request: web.Request) -> web.Response:
        body = await _json(request)
        prompt = body.get("promptText")
        duration = body.get("duration")
        problem = None
        if body.get("model") != "gen4.5":
            problem = "model must be gen4.5 for this fake"
        elif not isinstance(prompt, str) or not prompt:
            problem = "promptText is required"
        elif len(prompt.encode("utf-16-le")) // 2 > 1000:
            problem = "promptText must be at most 1000 characters"
        elif body.get("ratio") not in ("1280:720", "720:1280"):
            problem = "ratio must be 1280:720 or 720:1280"
        elif not isinstance(duration, int) or not 2 <= duration <= 10:
            problem = "duration must be an integer from 2 to 10"
        if problem:
            return web.json_response({"error": problem}, status=400)
        assert isinstance(duration, int)
        job = self._new_job("runway", body, duration)
        return web.json_response({"id": job.id, "estimatedCost": {"credits": 12 * duration}})

    async def _runway_get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.api != "runway":
            return web.json_response({"error": "Task not found"}, status=404)
        job.checked()
        base = {"id": job.id, "createdAt": "2026-12-03T12:00:00.000Z"}
        estimate = {"estimatedCost": {"credits": 12 * job.seconds}}
        s = job.script
        if not job.finished:
            if job.checks <= s.throttled:
                return web.json_response({**base, **estimate, "status": "THROTTLED"})
            if job.checks == s.throttled + 1:
                return web.json_response({**base, **estimate, "status": "PENDING"})
            progress = round(job.checks / max(1, s.checks), 2)
            return web.json_response(
                {**base, **estimate, "status": "RUNNING", "progress": progress}
            )
        full = {"cost": {"credits": 12 * job.seconds}}
        if s.ending == "done":
            url = f"{self.base_url}/_fake/runway-output/{job.id}.mp4"
            return web.json_response({**base, **full, "status": "SUCCEEDED", "output": [url]})
        if s.ending == "cancelled":
            return web.json_response({**base, "cost": {"credits": 0}, "status": "CANCELLED"})
        safety = s.ending == "refused"
        code = s.code or ("SAFETY.INPUT.TEXT" if safety else "INTERNAL.BAD_OUTPUT.CODE01")
        charged = s.credits_charged
        if charged is None:  # SAFETY failures are billed; internal ones are refunded
            charged = 12 * job.seconds if safety else 0
        return web.json_response(
            {
                **base,
                "cost": {"credits": charged},
                "status": "FAILED",
                "failure": s.reason
                or ("The prompt was rejected by content moderation." if safety else "Bad output"),
                "failureCode": code,
            }
        )

    async def _runway_output(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.Response(status=404)
        self.downloads.append(job.id)
        return web.Response(body=self.clip, content_type="video/mp4")


def _google_error(code: int, message: str, status: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "status": status}}, status=code
    )


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.text() or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.video_server`: prints its base URL, serves until SIGTERM."""
    import argparse

    from tests.fakes.loopback import serve_until_signalled

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.video_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--checks", type=int, default=2, help="status requests before a job ends")
    args = parser.parse_args(argv)
    server = FakeVideoAPI(host=args.host, port=args.port)
    server.script(default=JobScript("done", checks=args.checks))
    asyncio.run(serve_until_signalled(server, lambda: server.base_url))


if __name__ == "__main__":
    main()
