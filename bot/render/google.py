"""Google's video models on the Gemini API, through `google-genai`: Veo 3.1 and Omni Flash.

Pinned to google-genai 2.34.0 on purpose. From 3.0.0 on, `models.generate_videos` raises
before sending unless the client is in Vertex (Gemini Enterprise Agent Platform) mode
("This method is only supported in Gemini Enterprise Agent Platform mode": models.py,
`AsyncModels._generate_videos`, in 3.0.0 through 3.6.1; the 3.0.0 README says "Currently,
only Gemini Enterprise Agent Platform supports video generation"), so a Gemini API key could
no longer render Veo. 2.34.0 has both call shapes used here on the Gemini API.

Two call shapes (google-genai 2.34.0 source, read in site-packages):
- Veo: `client.aio.models.generate_videos(model, source=GenerateVideosSource(prompt),
  config=GenerateVideosConfig(...))` POSTs `v1beta/models/{model}:predictLongRunning` with
  `{"instances": [{"prompt"}], "parameters": {"sampleCount", "durationSeconds",
  "aspectRatio", "resolution", "negativePrompt"}}` (`_GenerateVideosConfig_to_mldev`) and
  returns an operation whose `name` is the job id. `client.aio.operations.get` needs an
  operation object, so a resumed poll rebuilds one from the saved name
  (`GenerateVideosOperation(name=…)`); it GETs `v1beta/{name}`. A finished operation carries
  `response.generateVideoResponse.generatedSamples[].video.uri`, or, when a filter refused
  it, no samples and `raiMediaFilteredReasons` (`_GenerateVideosResponse_from_mldev`). The
  file is fetched with `client.aio.files.download(file=video)` (`files/{id}:download`, the
  API key needed; Google keeps it about 2 days). On the Gemini API `seed` and
  `generate_audio` raise before sending (`_GenerateVideosConfig_to_mldev`), so neither is
  set: Veo 3.1 always renders its native audio there.
- Omni: `client.aio.interactions.create(model=…, input=prompt, background=True,
  response_format={"type": "video", "aspect_ratio", "resolution", "duration"})` POSTs
  `v1beta/interactions`; `client.aio.interactions.get(id)` GETs `v1beta/interactions/{id}`.
  Statuses: `queued, in_progress, completed, failed, cancelled, incomplete,
  budget_exceeded, requires_action, requires_continuation`
  (`_gaos/types/interactions/interaction.py`, `InteractionStatus`); the SDK puts the last
  video content of the model's output in `output_video` (`_gaos/google_genai.py`), as
  base64 `data` or a `uri` (`VideoResponseFormat.delivery`: inline or uri).

Both reach a fake on loopback through the SDK's own base-URL setting
(`HttpOptions(base_url=…)`, `_base_url.get_base_url`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from google import genai
from google.genai import types

from bot.dialogue.models import Draft, TargetProfile
from bot.render.base import (
    Cancelled,
    Done,
    Failed,
    Outcome,
    Refused,
    RenderPlan,
    Running,
    SubmitError,
    Tier,
    http_status,
    one_line,
    plan_on,
    transient,
)
from bot.render.prices import price_per_second

# ai.google.dev/gemini-api/docs/video: Veo 3.1 takes 4, 6 or 8 s, 16:9 or 9:16, 720p, 1080p
# or 4k, and "1080p and 4k need 8 s"; "Latency: min 11 seconds, max 6 minutes (peak hours)".
VEO_DURATIONS = (4, 6, 8)
VEO_ASPECTS = ("16:9", "9:16")
VEO_MAX_WAIT_S = 6 * 60.0
# The Render issue and Google's docs: Omni Flash renders 3 to 10 s, 16:9 or 9:16
# (`VideoResponseFormatAspectRatio`), 360p to 4k (`Resolution`). No documented longest wait:
# Runway's SDK default of 10 minutes is used.
OMNI_DURATIONS = tuple(range(3, 11))
OMNI_ASPECTS = ("16:9", "9:16")
OMNI_MAX_WAIT_S = 10 * 60.0
# A Veo refusal that names the audio filter is known to be flaky: the same prompt often
# passes on a second try (googleapis/js-genai#1272: "We encountered an issue with the audio
# for your prompt ... You have not been charged for this attempt").
_AUDIO_FILTER_WORDS = ("issue with the audio", "audio for your prompt")
# Interaction failures whose words say a policy refused the prompt, not an outage.
_POLICY_WORDS = ("safety", "policy", "blocked", "prohibited", "responsible ai", "rai")


def make_client(api_key: str, base_url: str | None) -> genai.Client:
    """A Gemini API client that tries each call once: waiting is the poll loop's job."""
    options = types.HttpOptions(
        base_url=base_url or None, retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=api_key, http_options=options)


def _message_of(e: BaseException) -> str:
    message = getattr(e, "message", None)
    return one_line(message if isinstance(message, str) and message else str(e))


def _submit_error(e: Exception, vendor: str) -> SubmitError:
    status = http_status(e)
    if transient(e):
        what = "rate limited" if status == 429 else "unreachable or overloaded"
        return SubmitError(f"{vendor} is {what}: {_message_of(e)}", retryable=True)
    return SubmitError(f"{vendor} refused the request: {_message_of(e)}", retryable=False)


def _poll_trouble(e: Exception) -> Outcome:
    """A check that failed: the job still runs as far as we know, so ask again later, unless
    the vendor says the job is unknown or the key is refused."""
    if transient(e):
        return Running("rate limited" if http_status(e) == 429 else "vendor unreachable")
    return Failed(f"Checking the job failed: {_message_of(e)}", retryable=False)


class _Gemini:
    """What both Google renderers share: the client and the plan's common part."""

    vendor = "Google"

    def __init__(self, *, api_key: str, base_url: str | None = None) -> None:
        self.client = make_client(api_key, base_url)

    async def aclose(self) -> None:
        await self.client.aio.aclose()

    async def download(self, file: types.Video | str) -> bytes:
        return await self.client.aio.files.download(file=file)


class VeoRenderer(_Gemini):
    name = "veo"
    max_wait_s = VEO_MAX_WAIT_S
    poll_s = 10.0  # Google's own examples poll every 10 s

    def plan(self, draft: Draft, target: TargetProfile, tier: Tier) -> RenderPlan:
        plan = plan_on(
            self.name,
            self.vendor,
            draft,
            target,
            tier,
            label="Veo",
            sizes=VEO_ASPECTS,
            durations=VEO_DURATIONS,
            audio=True,  # always on the Gemini API: generate_audio cannot be sent there
            negative=True,
        )
        if plan.resolution in ("1080p", "4k") and plan.seconds != 8:
            note = f"Veo renders {plan.resolution} only at 8 s; this {plan.seconds} s clip is 720p"
            plan = plan.model_copy(
                update={
                    "resolution": "720p",
                    "price_per_second": price_per_second(plan.model, "720p"),
                    "notes": [*plan.notes, note],
                }
            )
        return plan

    async def submit(self, plan: RenderPlan) -> str:
        config = types.GenerateVideosConfig(
            number_of_videos=1,
            duration_seconds=plan.seconds,
            aspect_ratio=plan.size,
            resolution=plan.resolution,
            negative_prompt=plan.negative_prompt or None,
        )
        try:
            operation = await self.client.aio.models.generate_videos(
                model=plan.model,
                source=types.GenerateVideosSource(prompt=plan.prompt),
                config=config,
            )
        except Exception as e:
            raise _submit_error(e, "Veo") from e
        if not operation.name:
            raise SubmitError("Veo answered without an operation name", retryable=True)
        return operation.name

    async def check(self, plan: RenderPlan, job_id: str) -> Outcome:
        try:
            # A resumed poll has only the saved name: operations.get needs an object.
            operation = await self.client.aio.operations.get(
                types.GenerateVideosOperation.model_validate({"name": job_id})
            )
        except Exception as e:
            return _poll_trouble(e)
        if not operation.done:
            return Running("rendering")
        if operation.error:
            message = one_line(str(operation.error.get("message") or operation.error))
            return Failed(f"Veo failed: {message}", retryable=True)
        response = operation.response
        videos = (response.generated_videos or []) if response else []
        if videos and videos[0].video is not None:
            try:
                data = await self.download(videos[0].video)
            except Exception as e:
                return _poll_trouble(e)
            return Done(video=data, seconds=float(plan.seconds), resolution=plan.resolution)
        reasons = (response.rai_media_filtered_reasons or []) if response else []
        if reasons:
            reason = one_line(reasons[0])
            flaky = any(w in reason.lower() for w in _AUDIO_FILTER_WORDS)
            # "You are only charged if the video is successfully generated" (Gemini pricing).
            return Refused(reason=reason, charged=False, retry_once=flaky)
        return Failed("Veo finished without a video and without saying why", retryable=True)


class OmniRenderer(_Gemini):
    name = "omni"
    max_wait_s = OMNI_MAX_WAIT_S
    poll_s = 5.0

    def plan(self, draft: Draft, target: TargetProfile, tier: Tier) -> RenderPlan:
        # The Interactions API has no negative prompt field.
        return plan_on(
            self.name,
            self.vendor,
            draft,
            target,
            tier,
            label="Omni",
            sizes=OMNI_ASPECTS,
            durations=OMNI_DURATIONS,
            audio=True,
            negative=False,
        )

    async def submit(self, plan: RenderPlan) -> str:
        response_format: dict[str, Any] = {
            "type": "video",
            "aspect_ratio": plan.size,
            "resolution": plan.resolution,
            # A protobuf Duration in JSON form, as the API's other durations are written.
            "duration": f"{plan.seconds}s",
        }
        try:
            interaction = await self.client.aio.interactions.create(
                model=plan.model,
                input=plan.prompt,
                background=True,
                response_format=response_format,
            )
        except Exception as e:
            raise _submit_error(e, "Omni") from e
        job_id = getattr(interaction, "id", None)
        if not isinstance(job_id, str) or not job_id:
            raise SubmitError("Omni answered without an interaction id", retryable=True)
        return job_id

    async def check(self, plan: RenderPlan, job_id: str) -> Outcome:
        try:
            interaction: Any = await self.client.aio.interactions.get(job_id)
        except Exception as e:
            return _poll_trouble(e)
        status = str(interaction.status)
        if status in ("queued", "in_progress"):
            return Running(status.replace("_", " "))
        if status == "completed":
            return await self._finished(plan, interaction)
        if status == "cancelled":
            return Cancelled("The Omni job was cancelled")
        errors = getattr(interaction, "errors", None) or []
        message = one_line(
            "; ".join(str(getattr(e, "message", "") or getattr(e, "code", "")) for e in errors)
        )
        if status == "failed":
            if any(w in message.lower() for w in _POLICY_WORDS):
                return Refused(reason=message or "Omni's safety filters", charged=False)
            return Failed(f"Omni failed: {message or 'no reason given'}", retryable=True)
        if status == "budget_exceeded":
            return Failed("The Gemini project's spending limit was reached", retryable=False)
        if status == "incomplete":
            return Failed("Omni stopped before the video was finished", retryable=True)
        return Failed(f"Omni answered {status!r}, which a render never expects", retryable=False)

    async def _finished(self, plan: RenderPlan, interaction: Any) -> Outcome:
        video = getattr(interaction, "output_video", None)
        if video is None:
            said = one_line(getattr(interaction, "output_text", None) or "")
            return Refused(reason=said or "Omni finished without a video", charged=False)
        data = getattr(video, "data", None)
        if isinstance(data, str) and data:
            try:
                clip = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return Failed("Omni's video data was not valid base64", retryable=True)
        else:
            uri = getattr(video, "uri", None)
            if not isinstance(uri, str) or not uri:
                return Failed("Omni's video has neither data nor a link", retryable=True)
            try:
                clip = await self.download(uri)
            except Exception as e:
                return _poll_trouble(e)
        return Done(video=clip, seconds=float(plan.seconds), resolution=plan.resolution)
