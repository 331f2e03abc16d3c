"""Settings, from the environment and `.env`. Every setting has one home here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_ROUNDS = 6
MIN_ROUNDS = 1
MAX_ROUNDS = 12
MAX_IDEA_CHARS = 2000
MAX_INTERJECTION_CHARS = 4000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Claude
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = DEFAULT_MODEL
    anthropic_max_retries: int = 2
    anthropic_timeout_seconds: float = 120.0
    max_output_tokens: int = 4096

    # Dialogue
    default_persona: str = "founder"
    default_target: str = "sora-2"
    default_rounds: int = Field(DEFAULT_ROUNDS, ge=MIN_ROUNDS, le=MAX_ROUNDS)
    extra_profiles_dir: str | None = None  # more personas/ and targets/ as data files

    # Redis
    redis_url: str | None = None
    redis_prefix: str = "sora"
    session_ttl_seconds: int = 30 * 24 * 3600
    event_dedupe_ttl_seconds: int = 3600

    # Workers
    worker_concurrency: int = Field(50, ge=1, le=1000)
    lease_ttl_ms: int = Field(30_000, ge=1000)
    # A pending job idle this long belongs to a dead worker (live ones heartbeat).
    reclaim_idle_ms: int = Field(60_000, ge=1000)
    reclaim_every_seconds: float = Field(5.0, gt=0)
    # On SIGTERM, how long in-flight turns may finish before they are left to others.
    drain_seconds: float = Field(20.0, ge=0)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    prompts_channel: str | None = None
    port: int = 3000
    # Who may press Stop and Lock: the session's starter and workspace admins, or anyone.
    controls_allowed: Literal["starter_or_admin", "anyone"] = "starter_or_admin"
    max_running_per_user: int = Field(3, ge=1)
    max_running_per_team: int = Field(50, ge=1)
    # Turns stream with Slack's chat streaming where it works ("auto"), or always
    # post-then-update ("update").
    slack_streaming: Literal["auto", "update"] = "auto"


def load_settings() -> Settings:
    return Settings()
