"""The fake Slack server behaves like Slack, as seen through slack_sdk's own AsyncWebClient."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack, ts_key

TS_RE = re.compile(r"^\d{10}\.\d{6}$")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.token, base_url=slack.api_url)


async def slack_error(call: Awaitable[object]) -> SlackApiError:
    """Await a client call that must fail, and give its SlackApiError."""
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


async def test_post_thread_and_replies_in_order(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert slack.api_url.endswith("/api/")
    root = await client.chat_postMessage(channel="C0TEST", text="root")
    assert root["channel"] == "C0TEST"
    assert TS_RE.match(root["ts"])
    replies = []
    for i in range(3):
        reply = await client.chat_postMessage(
            channel="C0TEST",
            thread_ts=root["ts"],
            text=f"reply {i}",
            username="Director",
            icon_emoji=":clapper:",
        )
        replies.append(reply["ts"])
    # A reply to a reply lands in the root's thread, as in Slack.
    nested = await client.chat_postMessage(channel="C0TEST", thread_ts=replies[0], text="nested")
    assert nested["message"]["thread_ts"] == root["ts"]

    result = await client.conversations_replies(channel="C0TEST", ts=root["ts"])
    messages = result["messages"]
    assert [m["text"] for m in messages] == ["root", "reply 0", "reply 1", "reply 2", "nested"]
    stamps = [m["ts"] for m in messages]
    assert all(TS_RE.match(ts) for ts in stamps)
    assert [ts_key(ts) for ts in stamps] == sorted({ts_key(ts) for ts in stamps})  # strictly up
    assert messages[0]["reply_count"] == 4 and messages[0]["thread_ts"] == root["ts"]
    assert messages[0]["latest_reply"] == nested["ts"]
    reply = messages[1]
    assert reply["thread_ts"] == root["ts"] and reply["parent_user_id"] == BOT_USER_ID
    assert reply["user"] == BOT_USER_ID and reply["bot_id"] == BOT_ID
    assert reply["username"] == "Director" and reply["icons"] == {"emoji": ":clapper:"}
    assert result["has_more"] is False

    history = await client.conversations_history(channel="C0TEST")
    assert [m["text"] for m in history["messages"]] == ["root"]  # replies stay in the thread
    assert slack.thread("C0TEST", root["ts"]) == messages
    # slack_sdk sends chat.* as JSON and the read methods as query parameters.
    assert {c.encoding for c in slack.calls_to("chat.postMessage")} == {"json"}
    assert slack.calls_to("conversations.replies")[0].encoding == "query"


async def test_pagination_with_cursor(client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="C0PAGE", text="root")
    for i in range(4):
        await client.chat_postMessage(channel="C0PAGE", thread_ts=root["ts"], text=str(i))
    first = await client.conversations_replies(channel="C0PAGE", ts=root["ts"], limit=3)
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    rest = await client.conversations_replies(
        channel="C0PAGE", ts=root["ts"], limit=3, cursor=cursor
    )
    texts = [m["text"] for m in [*first["messages"], *rest["messages"]]]
    assert texts == ["root", "0", "1", "2", "3"]
    assert rest["response_metadata"]["next_cursor"] == ""


async def test_update_replaces_text_and_marks_edited(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0TEST", text="draft")
    updated = await client.chat_update(
        channel="C0TEST",
        ts=posted["ts"],
        text="final",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*final*"}}],
    )
    assert updated["ts"] == posted["ts"] and updated["text"] == "final"
    history = await client.conversations_history(channel="C0TEST")
    [message] = history["messages"]
    assert message["text"] == "final"
    assert message["blocks"][0]["text"]["text"] == "*final*"
    assert message["edited"]["user"] == BOT_USER_ID
    assert ts_key(message["edited"]["ts"]) > ts_key(posted["ts"])
    error = await slack_error(client.chat_update(channel="C0TEST", ts="1.000001", text="x"))
    assert error.response["error"] == "message_not_found"


async def test_metadata_round_trip(client: AsyncWebClient) -> None:
    metadata = {"event_type": "sora_turn", "event_payload": {"round": 2, "speaker": "director"}}
    root = await client.chat_postMessage(channel="C0TEST", text="root")
    await client.chat_postMessage(
        channel="C0TEST", thread_ts=root["ts"], text="turn", metadata=metadata
    )
    with_metadata = await client.conversations_replies(
        channel="C0TEST", ts=root["ts"], include_all_metadata=True
    )
    assert with_metadata["messages"][1]["metadata"] == metadata
    without = await client.conversations_replies(channel="C0TEST", ts=root["ts"])
    assert "metadata" not in without["messages"][1]
    error = await slack_error(
        client.chat_postMessage(channel="C0TEST", text="x", metadata={"event_payload": {}})
    )
    assert error.response["error"] == "invalid_metadata_schema"


async def test_pins(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0TEST", text="the prompt")
    await client.pins_add(channel="C0TEST", timestamp=posted["ts"])
    error = await slack_error(client.pins_add(channel="C0TEST", timestamp=posted["ts"]))
    assert error.response["error"] == "already_pinned"
    error = await slack_error(client.pins_add(channel="C0TEST", timestamp="1700000000.000001"))
    assert error.response["error"] == "message_not_found"
    listed = await client.pins_list(channel="C0TEST")
    assert [item["message"]["text"] for item in listed["items"]] == ["the prompt"]
    assert slack.pins("C0TEST") == [posted["ts"]]


async def test_reactions(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0TEST", text="hello")
    await client.reactions_add(channel="C0TEST", timestamp=posted["ts"], name="eyes")
    error = await slack_error(
        client.reactions_add(channel="C0TEST", timestamp=posted["ts"], name="eyes")
    )
    assert error.response["error"] == "already_reacted"
    assert slack.reactions("C0TEST", posted["ts"]) == {"eyes": [BOT_USER_ID]}
    history = await client.conversations_history(channel="C0TEST")
    assert history["messages"][0]["reactions"] == [
        {"name": "eyes", "users": [BOT_USER_ID], "count": 1}
    ]
    await client.reactions_remove(channel="C0TEST", timestamp=posted["ts"], name="eyes")
    error = await slack_error(
        client.reactions_remove(channel="C0TEST", timestamp=posted["ts"], name="eyes")
    )
    assert error.response["error"] == "no_reaction"
    assert slack.reactions("C0TEST", posted["ts"]) == {}


async def test_files_upload_v2_into_thread(slack: FakeSlack, client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="C0TEST", text="session")
    content = "A slow dolly shot through fog.\n" * 50
    result = await client.files_upload_v2(
        channel="C0TEST",
        thread_ts=root["ts"],
        content=content,
        filename="prompt.md",
        title="Final prompt",
        initial_comment="Here is the prompt",
    )
    file_id = result["file"]["id"]
    assert result["file"]["title"] == "Final prompt"
    assert slack.file_content(file_id) == content.encode()
    [stored] = slack.files()
    assert stored["name"] == "prompt.md" and stored["size"] == len(content.encode())

    # The share is asynchronous, as Slack's: the answer carries no message ts, and the
    # thread and files.info show the file only once it is shared.
    assert "ts" not in result.data and not result["file"].get("shares")
    thread = (await client.conversations_replies(channel="C0TEST", ts=root["ts"]))["messages"]
    assert len(thread) == 1
    assert not (await client.files_info(file=file_id))["file"]["shares"]
    await asyncio.sleep(slack.share_delay_s * 2)
    info = (await client.files_info(file=file_id))["file"]
    assert [s["thread_ts"] for s in info["shares"]["public"][slack.channel_id("C0TEST")]] == [
        root["ts"]
    ]
    thread = (await client.conversations_replies(channel="C0TEST", ts=root["ts"]))["messages"]
    assert len(thread) == 2
    share = thread[1]
    assert share["text"] == "Here is the prompt" and share["files"][0]["id"] == file_id
    # url_private serves the bytes back to a bearer of the bot token, as Slack's does.
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            stored["url_private"], headers={"Authorization": f"Bearer {slack.token}"}
        ) as response,
    ):
        assert await response.read() == content.encode()
    methods = [c.method for c in slack.calls if c.method.startswith(("files.", "upload"))]
    assert methods[:3] == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


async def test_an_upload_over_the_workspaces_limit_is_refused_before_any_byte(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.max_upload_bytes = 10
    error = await slack_error(client.files_getUploadURLExternal(filename="clip.mp4", length=11))
    assert error.response["error"] == "file_upload_size_restricted"
    assert (await client.files_getUploadURLExternal(filename="clip.mp4", length=10))["file_id"]


async def test_invalid_token(slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-not-a-real-token", base_url=slack.api_url)
    error = await slack_error(client.auth_test())
    assert error.response.status_code == 200
    assert error.response["error"] == "invalid_auth"
    good = await AsyncWebClient(token=slack.token, base_url=slack.api_url).auth_test()
    assert (good["team_id"], good["user_id"], good["bot_id"]) == (TEAM_ID, BOT_USER_ID, BOT_ID)


async def test_rate_limited_then_retried_by_slack_sdk(slack: FakeSlack) -> None:
    client = AsyncWebClient(
        token=slack.token,
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    posted = await client.chat_postMessage(channel="C0TEST", text="after the wait")
    assert posted["ok"] is True
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    calls = slack.calls_to("chat.postMessage")
    assert [(c.status, c.error) for c in calls] == [(429, "ratelimited"), (200, None)]
    assert calls[0].params == calls[1].params
    assert [m["text"] for m in slack.messages("C0TEST")] == ["after the wait"]


async def test_429_without_retry_handler_surfaces(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail_next("chat.update", status=429, retry_after=7)
    error = await slack_error(client.chat_update(channel="C0TEST", ts="1.000001", text="x"))
    assert error.response.status_code == 429
    assert error.response["error"] == "ratelimited"
    assert error.response.headers["Retry-After"] == "7"


async def test_server_errors_and_injected_api_errors(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail_next("chat.postMessage", status=503)
    error = await slack_error(client.chat_postMessage(channel="C0TEST", text="x"))
    assert error.response.status_code == 503
    slack.error_next("chat.postMessage", "msg_too_long")
    error = await slack_error(client.chat_postMessage(channel="C0TEST", text="short"))
    assert (error.response.status_code, error.response["error"]) == (200, "msg_too_long")
    assert (await client.chat_postMessage(channel="C0TEST", text="ok now"))["ok"] is True
    assert [m["text"] for m in slack.messages("C0TEST")] == ["ok now"]


async def test_message_validation(slack: FakeSlack, client: AsyncWebClient) -> None:
    error = await slack_error(client.chat_postMessage(channel="C0TEST", text="x" * 40_001))
    assert error.response["error"] == "msg_too_long"
    assert (await client.chat_postMessage(channel="C0TEST", text="x" * 40_000))["ok"]
    with pytest.warns(UserWarning, match="`text` argument is missing"):  # slack_sdk's own
        error = await slack_error(client.chat_postMessage(channel="C0TEST", text=""))
    assert error.response["error"] == "no_text"

    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    error = await slack_error(client.chat_postMessage(channel="C0TEST", text="t", blocks=[section]))
    assert error.response["error"] == "invalid_blocks"
    assert "/blocks/0/text/text" in error.response["response_metadata"]["messages"][0]

    markdown = [{"type": "markdown", "text": "y" * 6000}, {"type": "markdown", "text": "y" * 6000}]
    assert (await client.chat_postMessage(channel="C0TEST", text="t", blocks=markdown))["ok"]
    markdown.append({"type": "markdown", "text": "y"})
    error = await slack_error(client.chat_postMessage(channel="C0TEST", text="t", blocks=markdown))
    assert error.response["error"] == "invalid_blocks"

    async with FakeSlack(auto_create_channels=False) as strict:
        channel = strict.seed_channel("sora-prompts", "C0SEEDED")
        strict_client = AsyncWebClient(token=strict.token, base_url=strict.api_url)
        assert (await strict_client.chat_postMessage(channel=channel, text="hi"))["ok"]
        by_name = await strict_client.chat_postMessage(channel="#sora-prompts", text="hi")
        assert by_name["channel"] == "C0SEEDED"
        error = await slack_error(strict_client.chat_postMessage(channel="C0NOPE", text="hi"))
        assert error.response["error"] == "channel_not_found"


async def test_chat_stream_helper(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.seed_user("U0ALICE", "alice")
    root_ts = slack.seed_message("C0TEST", "make me a video", user="U0ALICE")
    pieces = ["The camera ", "drifts over ", "a misty lake ", "at dawn."]
    streamer = await client.chat_stream(
        channel="C0TEST",
        thread_ts=root_ts,
        recipient_user_id="U0ALICE",
        recipient_team_id=TEAM_ID,
        buffer_size=16,
        username="Director",
    )
    for piece in pieces:
        await streamer.append(markdown_text=piece)
    done = await streamer.stop(
        blocks=[{"type": "context", "elements": [{"type": "mrkdwn", "text": "round 1"}]}]
    )
    assert done["ts"] == streamer.ts

    thread = slack.thread("C0TEST", root_ts)
    assert len(thread) == 2
    final = thread[1]
    assert final["text"] == "".join(pieces)
    assert final["username"] == "Director" and final["blocks"][-1]["type"] == "context"
    methods = [c.method for c in slack.calls if c.method.startswith("chat.")]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    assert {c.encoding for c in slack.calls if c.method.endswith("Stream")} == {"json"}

    error = await slack_error(
        client.chat_appendStream(channel="C0TEST", ts=final["ts"], markdown_text="late")
    )
    assert error.response["error"] == "message_not_in_streaming_state"
    error = await slack_error(client.chat_startStream(channel="C0TEST", thread_ts=root_ts))
    assert error.response["error"] == "missing_recipient_user_id"
    # In a DM the recipient is implied.
    dm = slack.seed_channel("alice-dm", "D0ALICE")
    dm_root = slack.seed_message(dm, "hi", user="U0ALICE")
    started = await client.chat_startStream(channel=dm, thread_ts=dm_root, markdown_text="a")
    await client.chat_stopStream(channel=dm, ts=started["ts"], markdown_text="b")
    assert slack.thread(dm, dm_root)[1]["text"] == "ab"


async def test_stream_expires(client: AsyncWebClient, slack: FakeSlack) -> None:
    slack.stream_ttl = 0.0
    root = await client.chat_postMessage(channel="D0DM", text="hi")
    started = await client.chat_startStream(
        channel="D0DM", thread_ts=root["ts"], markdown_text="partial"
    )
    error = await slack_error(
        client.chat_stopStream(channel="D0DM", ts=started["ts"], markdown_text="rest")
    )
    assert error.response["error"] == "message_not_in_streaming_state"
    # The fallback the app uses: chat.update of the streamed message.
    await client.chat_update(channel="D0DM", ts=started["ts"], text="partial rest")
    assert slack.message("D0DM", started["ts"])["text"] == "partial rest"  # type: ignore[index]


async def test_users_info_is_admin(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.seed_user("U0ADMIN", "ada", is_admin=True, display_name="Ada", real_name="Ada L")
    slack.seed_user("U0PLAIN", "bob")
    admin = (await client.users_info(user="U0ADMIN"))["user"]
    assert admin["is_admin"] is True
    assert admin["profile"]["display_name"] == "Ada" and admin["real_name"] == "Ada L"
    assert (await client.users_info(user="U0PLAIN"))["user"]["is_admin"] is False
    error = await slack_error(client.users_info(user="U0NOBODY"))
    assert error.response["error"] == "user_not_found"


async def test_rate_limit_mode(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.set_rate_limit(2)
    await client.chat_postMessage(channel="C0ONE", text="1")
    await client.chat_postMessage(channel="C0ONE", text="2")
    await client.chat_postMessage(channel="C0TWO", text="other channel")
    error = await slack_error(client.chat_postMessage(channel="C0ONE", text="3"))
    assert (error.response.status_code, error.response.headers["Retry-After"]) == (429, "1")
    assert [m["text"] for m in slack.messages("C0ONE")] == ["1", "2"]


async def test_ephemeral_permalink_delete_and_views(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.seed_channel("general", "C0GEN", members=["U0ALICE"])
    sent = await client.chat_postEphemeral(channel="C0GEN", user="U0ALICE", text="only you")
    assert TS_RE.match(sent["message_ts"])
    assert [m["text"] for m in slack.ephemerals("C0GEN", "U0ALICE")] == ["only you"]
    assert slack.messages("C0GEN") == []
    error = await slack_error(client.chat_postEphemeral(channel="C0GEN", user="U0BOB", text="x"))
    assert error.response["error"] == "user_not_in_channel"

    root = await client.chat_postMessage(channel="C0GEN", text="root")
    reply = await client.chat_postMessage(channel="C0GEN", thread_ts=root["ts"], text="r")
    link = (await client.chat_getPermalink(channel="C0GEN", message_ts=reply["ts"]))["permalink"]
    assert f"/archives/C0GEN/p{reply['ts'].replace('.', '')}" in link
    assert f"thread_ts={root['ts']}" in link
    await client.chat_delete(channel="C0GEN", ts=reply["ts"])
    assert [m["text"] for m in slack.messages("C0GEN")] == ["root"]

    view = {"type": "modal", "title": {"type": "plain_text", "text": "New session"}, "blocks": []}
    opened = await client.views_open(trigger_id="123.456", view=view)
    view_id = opened["view"]["id"]
    assert view_id.startswith("V")
    view["title"] = {"type": "plain_text", "text": "Step 2"}
    await client.views_update(view_id=view_id, view=view, hash=opened["view"]["hash"])
    assert [v["title"]["text"] for v in slack.views()] == ["Step 2"]
    error = await slack_error(client.views_update(view_id=view_id, view=view, hash="stale"))
    assert error.response["error"] == "hash_conflict"


async def test_standalone_process_and_http_api() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.slack_server",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        api_url = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/api/")
        base = api_url.removesuffix("api/")
        client = AsyncWebClient(token="xoxb-fake-bot-token", base_url=api_url)
        async with aiohttp.ClientSession() as http:
            seed = {"users": [{"id": "U0ADMIN", "name": "ada", "is_admin": True}]}
            async with http.post(f"{base}_fake/seed", json=seed) as response:
                assert (await response.json())["ok"] is True
            fault = {"method": "chat.postMessage", "error": "msg_too_long"}
            async with http.post(f"{base}_fake/faults", json=fault) as response:
                assert response.status == 200
            error = await slack_error(client.chat_postMessage(channel="C0E2E", text="x"))
            assert error.response["error"] == "msg_too_long"
            posted = await client.chat_postMessage(channel="C0E2E", text="from afar")
            assert (await client.users_info(user="U0ADMIN"))["user"]["is_admin"] is True
            async with http.get(f"{base}_fake/state") as response:
                state = await response.json()
            assert [m["text"] for m in state["messages"]["C0E2E"]] == ["from afar"]
            assert state["messages"]["C0E2E"][0]["ts"] == posted["ts"]
            async with http.get(f"{base}_fake/calls?method=chat.postMessage") as response:
                calls = await response.json()
            assert [c["error"] for c in calls] == ["msg_too_long", None]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_socket_mode_with_slack_sdks_own_client(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """slack_sdk's Socket Mode client connects, gets envelopes and acknowledges them."""
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest
    from slack_sdk.socket_mode.response import SocketModeResponse

    # Only the app-level token opens a connection, and it opens nothing else.
    assert (await slack_error(client.apps_connections_open(app_token=slack.token))).response[
        "error"
    ] == "not_allowed_token_type"
    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        await AsyncWebClient(token=slack.app_token, base_url=slack.api_url).auth_test()

    got: list[SocketModeRequest] = []

    async def on_request(sm: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        got.append(req)
        payload = {"text": "pong"} if req.type == "slash_commands" else None
        await sm.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload=payload)
        )

    sm = SocketModeClient(app_token=slack.app_token, web_client=client)
    sm.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
    await sm.connect()  # type: ignore[no-untyped-call]
    try:
        await slack.wait_socket(within=10)
        assert slack.hellos == 1
        command = await slack.socket_send("slash_commands", {"command": "/sora", "text": "ping"})
        assert (await slack.socket_ack(command))["payload"] == {"text": "pong"}
        event = await slack.socket_send("events_api", {"type": "event_callback"})
        assert await slack.socket_ack(event) == {"envelope_id": event}
        assert [(r.type, r.accepts_response_payload) for r in got] == [
            ("slash_commands", True),
            ("events_api", False),
        ]
        assert got[0].payload == {"command": "/sora", "text": "ping"}
    finally:
        await sm.close()  # type: ignore[no-untyped-call]
    # A connection URL is good once.
    url = (
        await AsyncWebClient(token=slack.app_token, base_url=slack.api_url).apps_connections_open(
            app_token=slack.app_token
        )
    )["url"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_json())["type"] == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(url):
                pass


# ---- issue 10: Slack's tiers and who sees a stream live -------------------------------


async def test_chat_update_is_tier_3_fifty_a_minute_then_429_with_retry_after() -> None:
    async with FakeSlack() as slack:
        slack.seed_channel("video", "C0T3")
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {slack.token}"}
            async with http.post(
                f"{slack.api_url}chat.postMessage",
                json={"channel": "C0T3", "text": "hi"},
                headers=headers,
            ) as r:
                ts = (await r.json())["ts"]
            statuses = []
            for i in range(51):
                async with http.post(
                    f"{slack.api_url}chat.update",
                    json={"channel": "C0T3", "ts": ts, "text": f"v{i}"},
                    headers=headers,
                ) as r:
                    statuses.append((r.status, r.headers.get("Retry-After")))
        assert [s for s, _ in statuses[:50]] == [200] * 50
        status, retry_after = statuses[50]
        assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 60
        assert slack.message("C0T3", ts)["text"] == "v49"  # the refused update did nothing
        assert slack.most_in_a_minute("chat.update") == 50


async def test_a_channel_stream_is_live_only_for_its_recipient() -> None:
    async with FakeSlack() as slack:
        slack.seed_channel("video", "C0ST")
        root = slack.seed_message("C0ST", "root", user="U0ANA")
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {slack.token}"}

            async def call(method: str, **params: Any) -> dict[str, Any]:
                async with http.post(f"{slack.api_url}{method}", json=params, headers=headers) as r:
                    return dict(await r.json())

            started = await call(
                "chat.startStream",
                channel="C0ST",
                thread_ts=root,
                recipient_user_id="U0ANA",
                recipient_team_id=TEAM_ID,
            )
            ts = started["ts"]
            await call("chat.appendStream", channel="C0ST", ts=ts, markdown_text="Once ")
            await call("chat.appendStream", channel="C0ST", ts=ts, markdown_text="upon a time")
            assert slack.seen_by("C0ST", ts, "U0ANA") == "Once upon a time"
            assert slack.seen_by("C0ST", ts, "U0BO") == "Once "  # the first chunk, frozen
            await call("chat.stopStream", channel="C0ST", ts=ts)
            assert slack.seen_by("C0ST", ts, "U0BO") == "Once upon a time"


# ---- membership, joining, GET methods, lost answers -------------------------------------------


async def test_a_channel_the_bot_has_not_joined_takes_posts_but_not_reads_pins_or_shares(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """Slack: chat:write.public posts in a public channel without joining; history
    reads, pins and file shares need membership (not_in_channel) until conversations.join."""
    open_ = slack.seed_channel("open", "C0OPEN", bot_member=False)
    root = await client.chat_postMessage(channel=open_, text="root")
    for call in (
        client.conversations_replies(channel=open_, ts=root["ts"]),
        client.conversations_history(channel=open_),
        client.pins_add(channel=open_, timestamp=root["ts"]),
        client.files_upload_v2(channel=open_, content=b"x", filename="r.md"),
    ):
        assert (await slack_error(call)).response["error"] == "not_in_channel"
    assert (await client.conversations_info(channel=open_))["channel"]["is_member"] is False
    joined = await client.conversations_join(channel=open_)
    assert joined["channel"]["is_member"] is True
    again = await client.conversations_join(channel=open_)
    assert again["warning"] == "already_in_channel"
    await client.pins_add(channel=open_, timestamp=root["ts"])
    await client.files_upload_v2(channel=open_, thread_ts=root["ts"], content=b"x", filename="r.md")
    await asyncio.sleep(slack.share_delay_s * 2)  # the share is asynchronous
    replies = await client.conversations_replies(channel=open_, ts=root["ts"])
    assert [bool(m.get("files")) for m in replies["messages"]] == [False, True]


async def test_private_and_archived_channels_refuse_a_join(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    secret = slack.seed_channel("secret", "G0SECRET", is_private=True, bot_member=False)
    old = slack.seed_channel("old", "C0OLD", is_archived=True, bot_member=False)
    assert (await slack_error(client.conversations_join(channel=secret))).response[
        "error"
    ] == "channel_not_found"
    assert (await slack_error(client.conversations_join(channel=old))).response[
        "error"
    ] == "is_archived"
    for channel, error in ((secret, "channel_not_found"), (old, "is_archived")):
        e = await slack_error(client.chat_postMessage(channel=channel, text="hi"))
        assert e.response["error"] == error


async def test_read_methods_arrive_as_get_like_slack_sdk_sends_them(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C0TEST", text="root")
    await client.conversations_replies(channel="C0TEST", ts=root["ts"])
    await client.conversations_history(channel="C0TEST")
    await client.chat_getPermalink(channel="C0TEST", message_ts=root["ts"])
    methods = {c.method: c.http_method for c in slack.calls}
    assert methods == {
        "chat.postMessage": "POST",
        "conversations.replies": "GET",
        "conversations.history": "GET",
        "chat.getPermalink": "GET",
    }
    assert all(c.error is None for c in slack.calls)


async def test_a_lost_answer_means_the_call_was_carried_out_but_never_answered(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C0TEST", text="root")
    bare = AsyncWebClient(token=slack.token, base_url=slack.api_url, retry_handlers=[])
    slack.lose_next("chat.postMessage")
    with pytest.raises(aiohttp.ClientError):
        await bare.chat_postMessage(channel="C0TEST", thread_ts=root["ts"], text="reply")
    assert [m["text"] for m in slack.thread("C0TEST", root["ts"])] == ["root", "reply"]
    assert [c.lost for c in slack.calls_to("chat.postMessage")] == [False, True]
    # slack_sdk's default connection-error retry re-sends it: a second message.
    slack.lose_next("chat.postMessage")
    await client.chat_postMessage(channel="C0TEST", thread_ts=root["ts"], text="again")
    texts = [m["text"] for m in slack.thread("C0TEST", root["ts"])]
    assert texts == ["root", "reply", "again", "again"]


async def test_posts_beyond_a_channels_burst_get_429_until_the_next_token(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.set_post_bucket(1.0, burst=3)
    for i in range(3):
        await client.chat_postMessage(channel="C0TEST", text=f"burst {i}")
    refused = await slack_error(client.chat_postMessage(channel="C0TEST", text="one too many"))
    assert refused.response.status_code == 429
    assert refused.response.headers.get("Retry-After") == "1"
    await client.chat_postMessage(channel="C0OTHER", text="another channel has its own")
    await asyncio.sleep(1.05)
    await client.chat_postMessage(channel="C0TEST", text="a second later")


async def test_reactions_add_is_tier_3_for_the_workspace(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.set_method_limit("reactions.add", 2)
    ts = str((await client.chat_postMessage(channel="C0TEST", text="x"))["ts"])
    for name in ("eyes", "tada"):
        await client.reactions_add(channel="C0TEST", timestamp=ts, name=name)
    refused = await slack_error(client.reactions_add(channel="C0TEST", timestamp=ts, name="+1"))
    assert refused.response.status_code == 429


async def test_a_threads_status_shows_until_the_app_replies(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = str((await client.chat_postMessage(channel="C0TEST", text="root"))["ts"])
    await client.assistant_threads_setStatus(
        channel_id="C0TEST", thread_ts=root, status="is writing…", username="Tomás"
    )
    assert slack.thread_status("C0TEST", root) == "Tomás is writing…"
    await client.chat_postMessage(channel="C0TEST", thread_ts=root, text="done")
    assert slack.thread_status("C0TEST", root) is None
    bad = await slack_error(
        client.assistant_threads_setStatus(channel_id="C0TEST", thread_ts="1.2", status="x")
    )
    assert bad.response["error"] == "invalid_thread_ts"
