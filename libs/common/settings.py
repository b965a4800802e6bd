"""Settings, one class per concern, read from environment variables only.

Outside development the secrets must be set explicitly: ``check_production()`` refuses defaults.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_AUTH_TOKEN = "repotalk-dev-auth-token"
DEV_SECRET_KEY = "repotalk-dev-secret-key-change-me"


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)


class AppSettings(_Base):
    env: Literal["development", "test", "production"] = Field("development", alias="REPOTALK_ENV")
    data_dir: Path = Field(Path("data"), alias="REPOTALK_DATA_DIR")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="LOG_FORMAT")
    port: int = Field(8000, alias="PORT")
    host: str = Field("127.0.0.1", alias="HOST")
    # The URL Twilio calls, as Twilio sees it (scheme, host, port, prefix); used to verify signatures
    # behind TLS-terminating proxies. Empty: rebuilt from the request (and trusted X-Forwarded-*).
    public_base_url: str = Field("", alias="PUBLIC_BASE_URL")
    trust_forwarded_headers: bool = Field(False, alias="TRUST_FORWARDED_HEADERS")
    max_request_bytes: int = Field(64 * 1024, alias="MAX_REQUEST_BYTES")


class DatabaseSettings(_Base):
    # Empty means the embedded SQLite file under REPOTALK_DATA_DIR.
    url: str = Field("", alias="DATABASE_URL")
    pool_size: int = Field(5, alias="DATABASE_POOL_SIZE")

    def resolved_url(self, app: AppSettings) -> str:
        if self.url:
            return self.url
        return f"sqlite:///{(app.data_dir / 'repotalk.db').resolve()}"


class BrokerSettings(_Base):
    # "memory://" runs every worker in-process (embedded); "redis://..." is the distributed broker.
    url: str = Field("memory://localhost/", alias="BROKER_URL")
    # Must exceed the longest task run plus any retry delay (FACTS: shorter re-runs tasks).
    visibility_timeout: int = Field(600, alias="BROKER_VISIBILITY_TIMEOUT")
    # How often a worker looks for messages abandoned by a dead worker.
    restore_interval: int = Field(5, alias="BROKER_RESTORE_INTERVAL")
    publish_timeout: float = Field(2.0, alias="BROKER_PUBLISH_TIMEOUT")
    key_prefix: str = Field("", alias="BROKER_KEY_PREFIX")
    worker_pool: Literal["solo", "threads", "prefork"] = Field("threads", alias="WORKER_POOL")
    worker_concurrency: int = Field(4, alias="WORKER_CONCURRENCY")
    outbox_relay_interval: float = Field(1.0, alias="OUTBOX_RELAY_INTERVAL")


class TwilioSettings(_Base):
    account_sid: str = Field("", alias="TWILIO_ACCOUNT_SID")
    auth_token: str = Field(DEV_AUTH_TOKEN, alias="TWILIO_AUTH_TOKEN")
    whatsapp_from: str = Field("whatsapp:+14155238886", alias="TWILIO_WHATSAPP_FROM")
    # Tests point the official SDK at a local server that speaks Twilio's REST API.
    api_base_url: str = Field("", alias="TWILIO_API_BASE_URL")
    # Approved template sent instead of free text outside the 24-hour customer-service window.
    template_content_sid: str = Field("", alias="TWILIO_TEMPLATE_CONTENT_SID")
    status_callback_url: str = Field("", alias="TWILIO_STATUS_CALLBACK_URL")
    send_max_attempts: int = Field(5, alias="TWILIO_SEND_MAX_ATTEMPTS")
    send_backoff_base: float = Field(0.5, alias="TWILIO_SEND_BACKOFF_BASE")

    @property
    def sandbox(self) -> bool:
        """Without an account, replies go to the built-in sandbox channel instead of Twilio."""
        return not self.account_sid


class SecuritySettings(_Base):
    secret_key: str = Field(DEV_SECRET_KEY, alias="SECRET_KEY")
    # Comma-separated Fernet keys, newest first; empty derives one from SECRET_KEY.
    encryption_keys: str = Field("", alias="ENCRYPTION_KEYS")


class ConversationSettings(_Base):
    rate_limit_per_minute: int = Field(10, alias="RATE_LIMIT_PER_MINUTE")
    session_idle_minutes: int = Field(30, alias="SESSION_IDLE_MINUTES")
    history_turns: int = Field(6, alias="HISTORY_TURNS")
    max_body_chars: int = Field(4096, alias="MAX_MESSAGE_CHARS")
    whatsapp_window_hours: int = Field(24, alias="WHATSAPP_WINDOW_HOURS")


class SearchSettings(_Base):
    # Empty: <REPOTALK_DATA_DIR>/index.
    index_dir: str = Field("", alias="INDEX_DIR")
    max_file_bytes: int = Field(2 * 1024 * 1024, alias="INDEX_MAX_FILE_BYTES")
    result_limit: int = Field(8, alias="SEARCH_RESULT_LIMIT")
    regex_timeout: float = Field(5.0, alias="SEARCH_REGEX_TIMEOUT")
    # Indexed by the code_search worker at start: "name=path,name2=path2" or plain paths.
    repos: str = Field("", alias="REPOS")

    def resolved_index_dir(self, app: AppSettings) -> Path:
        return Path(self.index_dir) if self.index_dir else app.data_dir / "index"


class AISettings(_Base):
    openai_api_key: str = Field("", alias="OPENAI_API_KEY")
    openai_base_url: str = Field("", alias="OPENAI_BASE_URL")
    openai_model: str = Field("gpt-4o-mini", alias="OPENAI_MODEL")
    # Retries of 408/409/429/5xx inside the SDK (exponential backoff) before falling back.
    openai_max_retries: int = Field(2, alias="OPENAI_MAX_RETRIES")
    timeout: float = Field(30.0, alias="AI_TIMEOUT")
    max_answer_chars: int = Field(3000, alias="AI_MAX_ANSWER_CHARS")


class Settings:
    """Every concern's settings, read once per process (``get_settings.cache_clear()`` in tests)."""

    def __init__(self) -> None:
        self.app = AppSettings()
        self.database = DatabaseSettings()
        self.broker = BrokerSettings()
        self.twilio = TwilioSettings()
        self.security = SecuritySettings()
        self.conversation = ConversationSettings()
        self.search = SearchSettings()
        self.ai = AISettings()

    @property
    def database_url(self) -> str:
        return self.database.resolved_url(self.app)

    @property
    def index_dir(self) -> Path:
        return self.search.resolved_index_dir(self.app)

    def check_production(self) -> None:
        """Fail fast when production would run with development secrets."""
        if self.app.env != "production":
            return
        problems = []
        if self.security.secret_key == DEV_SECRET_KEY or len(self.security.secret_key) < 32:
            problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
        if self.twilio.auth_token == DEV_AUTH_TOKEN:
            problems.append("TWILIO_AUTH_TOKEN must be set")
        if not self.database.url:
            problems.append("DATABASE_URL must be set")
        if self.broker.url.startswith("memory://"):
            problems.append("BROKER_URL must point at Redis")
        if problems:
            raise RuntimeError("refusing to start in production: " + "; ".join(problems))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.check_production()
    return settings
