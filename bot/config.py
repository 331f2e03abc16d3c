"""Settings, from the environment and `.env`. Every setting has one home here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_ROUNDS = 6
MIN_ROUNDS = 1
MAX_ROUNDS = 12
MAX_IDEA_CHARS = 2000
MAX_INTERJECTION_CHARS = 4000


class Settings(BaseSettings):
    # An empty value, in the environment or in .env, means "not set": the setting keeps
    # its default. So a copied .env.example (every setting listed, secrets left empty)
    # behaves exactly like no .env at all.
    # Which .env is read is `find_env_file`'s choice, passed in by `load_settings`.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", env_ignore_empty=True)

    # Claude
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = DEFAULT_MODEL
    anthropic_max_retries: int = 2
    anthropic_timeout_seconds: float = 120.0
    # Thinking counts toward max_tokens. The longest legal reply (a 6,000-character message,
    # a prompt of up to 6,000 characters and its parts, as JSON) is about 5,000 tokens; the
    # rest is room for thinking. A reply cut at the limit is retried once with twice this.
    max_output_tokens: int = Field(16_000, ge=256)
    # output_config.effort: how hard the model thinks (low, medium, high, xhigh, max), or
    # "default" for the model's own (high on Sonnet 5.5). A turn is a short structured reply.
    anthropic_effort: Literal["low", "medium", "high", "xhigh", "max", "default"] = "low"
    # off: the least thinking the model accepts (disabled, between_tools on Sonnet 5.5, or
    # adaptive on models whose thinking is always on); adaptive: the model decides.
    anthropic_thinking: Literal["off", "adaptive"] = "off"
    # An overload or server error that outlasts the SDK's retries: the turn is retried with
    # exponential backoff and jitter (base doubling up to cap) for this long before it pauses.
    outage_retry_seconds: float = Field(120.0, ge=0)
    outage_backoff_base_seconds: float = Field(2.0, gt=0)
    outage_backoff_cap_seconds: float = Field(30.0, gt=0)

    # Dialogue
    default_persona: str = "founder"
    default_target: str = "sora-2"
    default_rounds: int = Field(DEFAULT_ROUNDS, ge=MIN_ROUNDS, le=MAX_ROUNDS)
    extra_profiles_dir: str | None = None  # more personas/ and targets/ as data files

    # Render (bot/render): a renderer is configured when its key is set; offline needs none.
    gemini_api_key: SecretStr | None = None  # Veo and Omni on the Gemini API
    gemini_base_url: str | None = None  # empty for Google's; tests point it at a fake
    runwayml_api_secret: SecretStr | None = None  # Runway's API
    runwayml_base_url: str | None = None  # empty for Runway's; tests point it at a fake
    # The first wait between checks of a vendor job (later ones back off); unset: each
    # vendor's own pace (Veo 10 s, Omni 5 s, Runway 6 s). Tests shorten it.
    render_poll_seconds: float | None = Field(None, gt=0)
    # Who may press Render in Slack: the session's starter and workspace admins, or anyone.
    render_allowed: Literal["starter_or_admin", "anyone"] = "starter_or_admin"
    # Slack offers Render with the offline title-card renderer when no vendor key is set:
    # for development and tests (a real, playable clip; no account). Off: without a key,
    # the locked reply has no Render button.
    render_offline_in_slack: bool = False
    # Seconds of video a day (UTC) the workspace, and each person, may render; a refusal
    # the vendor did not charge for gives its seconds back.
    render_budget_seconds_per_team: int = Field(120, ge=0)
    render_budget_seconds_per_user: int = Field(40, ge=0)

    # Redis
    redis_url: str | None = None
    redis_prefix: str = "sora"
    # false: no certificate check on rediss:// (managed Redis with a self-signed certificate)
    redis_tls_verify: bool = True
    # Explicit socket timeouts: a stalled Redis is an error after this long, not after
    # redis-py's implicit wait. The web process answers Slack within ~1 s either way;
    # workers wait longer (their XREADGROUP blocks for 1 s by itself).
    redis_connect_timeout_seconds: float = Field(5.0, gt=0)
    redis_socket_timeout_seconds: float = Field(5.0, gt=1.0)
    redis_web_socket_timeout_seconds: float = Field(1.0, gt=0)
    # refuse: serve, worker and dev exit when Redis may evict the app's keys (any
    # maxmemory-policy but noeviction) or will not say (CONFIG GET disabled); warn: print
    # one line and run (a managed Redis whose plan is noeviction but hides CONFIG).
    redis_eviction_check: Literal["refuse", "warn"] = "refuse"
    # Retention: a finished (locked or stopped) session is kept this long (s); a library
    # entry (a locked prompt) this long after its lock, 0 for ever.
    session_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    library_ttl_seconds: int = Field(0, ge=0)
    event_dedupe_ttl_seconds: int = 3600

    # Workers
    worker_concurrency: int = Field(50, ge=1, le=1000)
    lease_ttl_ms: int = Field(30_000, ge=1000)
    # A pending job idle this long belongs to a dead worker (live ones heartbeat).
    reclaim_idle_ms: int = Field(60_000, ge=1000)
    reclaim_every_seconds: float = Field(5.0, gt=0)
    # Where each worker (and dev) serves GET /metrics for Prometheus; unset: not served.
    # `serve` serves it on PORT beside /healthz.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # The audit trail of a workspace keeps about this many entries (a capped stream).
    audit_max_entries: int = Field(100_000, ge=100)
    # On SIGTERM, how long in-flight turns may finish before they are left to others.
    drain_seconds: float = Field(20.0, ge=0)
    # How often one worker (under a lease) looks for running sessions with nothing behind
    # them: no job queued and no worker on them (a lost job stream), or no state at all.
    sweep_every_seconds: float = Field(30.0, gt=0)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # OAuth, for many workspaces on one deployment: with both set, `serve` offers
    # /slack/install and keeps each workspace's bot token in Redis (SLACK_BOT_TOKEN is
    # then not used). The scopes come from slack-manifest.yml.
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    # Where Slack sends the installer back; empty: the app's one configured Redirect URL.
    slack_redirect_uri: str | None = None
    # Fernet keys, comma-separated: the first encrypts stored installations, all decrypt.
    installation_encryption_keys: SecretStr | None = None
    # With token rotation on, a workspace's bot token is refreshed this long before it expires.
    slack_token_refresh_minutes: int = Field(120, ge=1, le=700)
    prompts_channel: str | None = None
    # Opt-in: prompts made in private places (private channels, DMs, group DMs, Slack Connect)
    # are collected here, a channel id that Slack must say is private. Unset: they stay put.
    private_prompts_channel: str | None = None
    port: int = 3000
    # Who may press Stop and Lock: the session's starter and workspace admins, or anyone.
    controls_allowed: Literal["starter_or_admin", "anyone"] = "starter_or_admin"
    max_running_per_user: int = Field(3, ge=1)
    max_running_per_team: int = Field(50, ge=1)
    max_running_per_channel: int = Field(10, ge=1)
    # chat.update calls a minute for the whole workspace, shared by every worker (Slack's
    # Tier 3 is about 50); turns' interim updates use what must-land updates leave.
    slack_updates_per_minute: int = Field(40, ge=2)


def oauth_enabled(settings: Settings) -> bool:
    """Many workspaces by OAuth (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET), or one bot token."""
    secret = settings.slack_client_secret
    return bool(settings.slack_client_id) and secret is not None and bool(secret.get_secret_value())


class SettingsError(Exception):
    """A setting in the environment or .env has a value it cannot take; one line says which."""


ENV_FILE_VARIABLE = "SORA_ENV_FILE"
# The checkout this code runs from (an editable install or a clone): its .env is the
# project's, wherever the command is run from. An installed wheel has no such root.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def find_env_file(explicit: str | None = None) -> Path | None:
    """The .env to read: `explicit` (--env-file) or $SORA_ENV_FILE, which must exist;
    else `.env` in the current folder; else the project root's `.env`; else none."""
    named = explicit or os.environ.get(ENV_FILE_VARIABLE) or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file() and not path.is_char_device():  # /dev/null: no settings
            source = "--env-file" if explicit else ENV_FILE_VARIABLE
            raise SettingsError(f"{source} {named}: no such file.")
        return path.absolute()
    for folder in (Path.cwd(), PROJECT_ROOT):
        if (folder / ".env").is_file():
            return (folder / ".env").absolute()
    return None


def describe_env_file(path: Path | None) -> str:
    """One line for a banner: where the settings were read from."""
    if path == Path(os.devnull):
        return "Settings: the environment only."
    if path is None:
        return f"Settings: the environment only (no .env here or in {PROJECT_ROOT})."
    return f"Settings: the environment and {path}."


def load_settings(env_file: Path | None = None) -> Settings:
    """The settings, from the environment and `env_file` (by default `find_env_file()`'s;
    the environment wins); raises `SettingsError` naming each bad value, never a traceback."""
    if env_file is None:
        env_file = find_env_file()
    try:
        return Settings(_env_file=env_file)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise SettingsError(f"Bad setting in the environment or .env: {problems}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"Cannot read {env_file or '.env'}: {e}") from None


def _describe(err: ErrorDetails) -> str:
    name = ".".join(str(p) for p in err["loc"])
    field = Settings.model_fields.get(name)
    secret = field is not None and "SecretStr" in str(field.annotation)
    value = "" if secret else f"={err.get('input')!r}"  # never echo a secret
    return f"{name.upper()}{value}: {err['msg']}"
