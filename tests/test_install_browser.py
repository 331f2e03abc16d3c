"""The install page in a real browser: headless Chromium (Debian's package) driven by Playwright.

From the "Add to Slack" click, through the fake Slack's consent page and its
redirect back, to the success page: the state cookie, the redirects and the
pages are the browser's own. Playwright only drives; it downloads no browser
(`scripts/test` installs Debian's `chromium`). A missing browser fails the
test with the command that installs it; it never skips.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.async_api import async_playwright

from tests.fakes.slack_server import FakeSlack
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.test_oauth import Deployment
from tests.test_oauth import deployment as deployment
from tests.test_oauth import make_deployment as make_deployment
from tests.test_oauth import slack as slack

CHROMIUM = os.environ.get("SORA_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.fail(
            f"the browser test needs Chromium at {CHROMIUM}: `apt-get install -y chromium` "
            "(scripts/test does it), or set SORA_TEST_CHROMIUM",
            pytrace=False,
        )
    return path


async def test_a_person_installs_the_app_by_clicking_add_to_slack(
    deployment: Deployment, slack: FakeSlack
) -> None:
    slack.install_team = "T0BETA"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), headless=True, args=FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(str(deployment.http.make_url("/slack/install")))
            assert await page.title() == "Install Sora Copilot"
            await page.get_by_role("link", name="Add to Slack").click()
            # Slack's consent page: which workspace, which scopes.
            await page.wait_for_url(re.compile(r"/oauth/v2/authorize\?"))
            assert "Beta Ltd" in await page.inner_text("h1")
            assert "chat:write.customize" in await page.content()
            await page.get_by_role("button", name="Allow").click()
            # Back on the app, which checked the state against the browser's cookie.
            await page.wait_for_url(re.compile(r"/slack/oauth_redirect\?code="))
            heading = await page.inner_text("#installed")
            assert heading == "Sora Copilot is installed in Beta Ltd"
            # The state was used once: reloading the redirect installs nothing more.
            await page.reload()
            assert "already used" in await page.inner_text("#reason")
        finally:
            await browser.close()
    assert slack.installs == 1
    assert (await deployment.workspaces.bot("T0BETA")).team_id == "T0BETA"
