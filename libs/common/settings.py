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
    env: Literal["development", "test", "production"] = Field(
        "development",
        alias="REPOTALK_ENV",
        description="development, test or production (production refuses development secrets)",
    )
    data_dir: Path = Field(
        Path("data"), alias="REPOTALK_DATA_DIR", description="where the embedded SQLite file and the search index live"
    )
    log_level: str = Field("INFO", alias="LOG_LEVEL", description="log level")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", alias="LOG_FORMAT", description="auto (JSON in production, text otherwise), json or text"
    )
    port: int = Field(8000, alias="PORT", description="HTTP port of `serve` and `gateway`")
    host: str = Field("127.0.0.1", alias="HOST", description="interface to bind (0.0.0.0 in containers)")
    # The URL Twilio calls, as Twilio sees it (scheme, host, port, prefix); used to verify signatures
    # behind TLS-terminating proxies. Empty: rebuilt from the request (and trusted X-Forwarded-*).
    public_base_url: str = Field(
        "",
        alias="PUBLIC_BASE_URL",
        description="the URL Twilio calls, as Twilio sees it; signatures are verified against it",
    )
    trust_forwarded_headers: bool = Field(
        False,
        alias="TRUST_FORWARDED_HEADERS",
        description="rebuild the signed URL from X-Forwarded-Proto/Host/Port (behind your own proxy)",
    )
    max_request_bytes: int = Field(
        64 * 1024, alias="MAX_REQUEST_BYTES", description="largest Twilio webhook body accepted (413 beyond)"
    )
    max_api_request_bytes: int = Field(
        1024 * 1024,
        alias="MAX_API_REQUEST_BYTES",
        description="largest body of any other request (`/api/v1/…`) accepted (413 beyond)",
    )


class DatabaseSettings(_Base):
    # Empty means the embedded SQLite file under REPOTALK_DATA_DIR.
    url: str = Field(
        "",
        alias="DATABASE_URL",
        description="Postgres (`postgresql+psycopg://…`) or SQLite URL; empty: SQLite under the data dir",
    )
    pool_size: int = Field(5, alias="DATABASE_POOL_SIZE", description="connections kept per process")

    def resolved_url(self, app: AppSettings) -> str:
        if self.url:
            return self.url
        return f"sqlite:///{(app.data_dir / 'repotalk.db').resolve()}"


class BrokerSettings(_Base):
    # "memory://" runs every worker in-process (embedded); "redis://..." is the distributed broker.
    url: str = Field(
        "memory://localhost/",
        alias="BROKER_URL",
        description="`redis://…` (distributed) or `memory://` (embedded, one process)",
    )
    # Must exceed the longest task run plus any retry delay (FACTS: shorter re-runs tasks).
    visibility_timeout: int = Field(
        600,
        alias="BROKER_VISIBILITY_TIMEOUT",
        description="seconds before a dead worker's unacknowledged task is redelivered; must exceed the longest task",
    )
    # How often a worker looks for messages abandoned by a dead worker.
    restore_interval: int = Field(
        5,
        alias="BROKER_RESTORE_INTERVAL",
        description="how often workers look for tasks abandoned by a dead worker (seconds)",
    )
    publish_timeout: float = Field(
        2.0,
        alias="BROKER_PUBLISH_TIMEOUT",
        description="how long a publish may wait for the broker before the outbox keeps the event",
    )
    key_prefix: str = Field(
        "",
        alias="BROKER_KEY_PREFIX",
        description="prefix of every Redis key the broker uses (several deployments on one Redis)",
    )
    worker_pool: Literal["solo", "threads", "prefork"] = Field(
        "threads", alias="WORKER_POOL", description="Celery pool of `repotalk worker`: threads, solo or prefork"
    )
    worker_concurrency: int = Field(4, alias="WORKER_CONCURRENCY", description="tasks a worker runs at once")
    batch_interval: float = Field(
        0.05, alias="BROKER_BATCH_INTERVAL", description="seconds a process gathers analytics copies before sending"
    )
    batch_max: int = Field(500, alias="BROKER_BATCH_MAX", description="most events in one analytics batch")
    hop_batch_max: int = Field(
        8, alias="HOP_BATCH_MAX", ge=1,
        description="most events one task carries from a service to the next when several are ready at once "
                    "(a burst the outbox relay sends, and what a batch's handlers publish); 1: a task each",
    )
    health_port: int = Field(
        0, alias="WORKER_HEALTH_PORT", description="port of a worker's /health, /ready and /metrics (0: none)"
    )
    outbox_relay_interval: float = Field(
        1.0,
        alias="OUTBOX_RELAY_INTERVAL",
        description="seconds between sweeps of the outbox for events not yet published",
    )
    redrive_after: float = Field(
        120.0,
        alias="TURN_REDRIVE_AFTER",
        description="seconds without any reply after which an accepted message's event is published again "
        "(recovers turns whose events a broker restart lost; keep above the slowest normal turn)",
    )
    redrive_max_age: float = Field(
        1800.0,
        alias="TURN_REDRIVE_MAX_AGE",
        description="seconds after which an unanswered message is no longer re-published (kept under the "
        "outbox's one-hour retention of published events)",
    )


class TwilioSettings(_Base):
    account_sid: str = Field(
        "", alias="TWILIO_ACCOUNT_SID", description="Twilio account; empty: replies go to the built-in sandbox channel"
    )
    auth_token: str = Field(
        DEV_AUTH_TOKEN,
        alias="TWILIO_AUTH_TOKEN",
        description="verifies webhook signatures and authenticates REST calls (required in production)",
    )
    whatsapp_from: str = Field(
        "whatsapp:+14155238886", alias="TWILIO_WHATSAPP_FROM", description="the WhatsApp sender replies come from"
    )
    # Tests point the official SDK at a local server that speaks Twilio's REST API.
    api_base_url: str = Field(
        "", alias="TWILIO_API_BASE_URL", description="send Twilio REST calls elsewhere (tests use a local server)"
    )
    # Approved template sent instead of free text outside the 24-hour customer-service window.
    template_content_sid: str = Field(
        "",
        alias="TWILIO_TEMPLATE_CONTENT_SID",
        description="approved template sent instead of free text outside the 24-hour window",
    )
    status_callback_url: str = Field(
        "",
        alias="TWILIO_STATUS_CALLBACK_URL",
        description="status callback URL given with each message (e.g. https://host/webhooks/twilio/status)",
    )
    send_max_attempts: int = Field(5, alias="TWILIO_SEND_MAX_ATTEMPTS", description="attempts per chunk on 429 and 5xx")
    send_backoff_base: float = Field(
        0.5, alias="TWILIO_SEND_BACKOFF_BASE", description="first backoff delay in seconds (doubles, with jitter)"
    )

    @property
    def sandbox(self) -> bool:
        """Without an account, replies go to the built-in sandbox channel instead of Twilio."""
        return not self.account_sid


class SecuritySettings(_Base):
    secret_key: str = Field(
        DEV_SECRET_KEY,
        alias="SECRET_KEY",
        description="keys the user-id hash and, without ENCRYPTION_KEYS, encryption; 32+ characters in production",
    )
    # Comma-separated Fernet keys, newest first; empty derives one from SECRET_KEY.
    encryption_keys: str = Field(
        "", alias="ENCRYPTION_KEYS", description="comma-separated Fernet keys, newest first, for personal data at rest"
    )


class PrivacySettings(_Base):
    retention_days: int = Field(
        90,
        alias="RETENTION_DAYS",
        ge=0,
        description="personal data older than this many days is removed by the retention job (0: kept forever)",
    )
    retention_interval_hours: float = Field(
        24.0,
        alias="RETENTION_INTERVAL_HOURS",
        gt=0,
        description="how often `repotalk beat` (or `serve`, in-process) starts the retention job; also once at start",
    )
    redact_at_twilio: bool = Field(
        False,
        alias="TWILIO_REDACT_BODIES",
        description="blank message bodies at Twilio once an inbound message is stored and a reply delivered",
    )


class AccessSettings(_Base):
    """Who may use the assistant. Open to every WhatsApp user unless one of these is set."""

    allow_list: bool = Field(
        False,
        alias="ALLOW_LIST",
        description="only allowed numbers and admitted users are answered (on by itself when ALLOWED_NUMBERS "
        "or INVITE_CODES is set); others get one polite refusal and nothing about them is stored",
    )
    # Numbers are hashed (keyed, as user ids are) when read and never kept in clear; `u_…` entries are
    # already hashed (`repotalk allow-list hash NUMBER`), so the configuration need hold no number.
    allowed_numbers: str = Field(
        "",
        alias="ALLOWED_NUMBERS",
        description="comma-separated numbers (`+E164`) or their ids (`u_…`, from `repotalk allow-list hash`) "
        "allowed to use the assistant",
    )
    invite_codes: str = Field(
        "",
        alias="INVITE_CODES",
        description="comma-separated team invite codes: an unknown user who sends `JOIN <code>` is admitted "
        "(12+ characters in production)",
    )
    refusal_interval_hours: float = Field(
        24.0,
        alias="ACCESS_REFUSAL_INTERVAL_HOURS",
        gt=0,
        description="a refused number is told so at most once per this many hours (remembered in memory only)",
    )

    @property
    def restricted(self) -> bool:
        return self.allow_list or bool(self.allowed_numbers.strip()) or bool(self.codes())

    def codes(self) -> list[str]:
        return [code.strip() for code in self.invite_codes.split(",") if code.strip()]


class ConversationSettings(_Base):
    rate_limit_per_minute: int = Field(
        10, alias="RATE_LIMIT_PER_MINUTE", description="messages per user per rolling minute (0: no limit)"
    )
    session_idle_minutes: int = Field(
        30, alias="SESSION_IDLE_MINUTES", description="idle time after which a conversation starts afresh"
    )
    history_turns: int = Field(6, alias="HISTORY_TURNS", description="previous exchanges given to the answerer")
    max_body_chars: int = Field(4096, alias="MAX_MESSAGE_CHARS", description="longest question accepted")
    whatsapp_window_hours: int = Field(
        24, alias="WHATSAPP_WINDOW_HOURS", description="WhatsApp's customer-service window"
    )


class SearchSettings(_Base):
    # Empty: <REPOTALK_DATA_DIR>/index.
    index_dir: str = Field("", alias="INDEX_DIR", description="search index directory; empty: `<data dir>/index`")
    max_file_bytes: int = Field(
        2 * 1024 * 1024,
        alias="INDEX_MAX_FILE_BYTES",
        description="files larger than this are skipped (and counted as oversized)",
    )
    result_limit: int = Field(8, alias="SEARCH_RESULT_LIMIT", description="hits per question")
    regex_timeout: float = Field(5.0, alias="SEARCH_REGEX_TIMEOUT", description="seconds a `/search` pattern may run")
    # Indexed by the code_search worker at start: "name=path,name2=path2" or plain paths.
    repos: str = Field(
        "", alias="REPOS", description="repositories a code_search worker indexes at start: `name=path,…`"
    )
    repo_roots: str = Field(
        "",
        alias="REPO_ROOTS",
        description="directories under which the admin API may index a path of the server (a working tree, "
        "a bare repository, a `file://` URL), comma-separated; empty: anywhere outside production, nowhere in "
        "production. `REPOS` and `repotalk index` are not limited",
    )
    git_webhook_secret: str = Field(
        "",
        alias="GIT_WEBHOOK_SECRET",
        description="secret of `POST /webhooks/git` (GitHub HMAC or GitLab token); empty: the webhook is refused",
    )
    # Distributed mode: code_search's HTTP routes are served by the code_search workers, which hold the
    # index; the gateway forwards them there. Empty: the process answers them itself (embedded).
    code_search_url: str = Field(
        "",
        alias="CODE_SEARCH_URL",
        description="where the gateway forwards `/api/v1/search`, `/api/v1/repos…` and `/webhooks/git` "
        "(a code_search worker's `CODE_SEARCH_PORT`); empty: served in-process (embedded)",
    )
    code_search_port: int = Field(
        0,
        alias="CODE_SEARCH_PORT",
        description="port of a code_search worker's HTTP API (search, repository admin, git webhook); 0: none",
    )
    reconcile_interval: float = Field(
        5.0,
        gt=0,
        alias="REPO_RECONCILE_INTERVAL",
        description="seconds between a code_search replica's checks of the repository catalog (it re-indexes "
        "what its own index lags behind)",
    )

    # Semantic search: off unless an embeddings endpoint is configured (indexing then sends every chunk
    # to it once; a chunk whose text did not change is never sent again).
    embeddings_url: str = Field(
        "",
        alias="EMBEDDINGS_URL",
        description="enables semantic search: an OpenAI-compatible API's base URL (`http://host:11434/v1` for "
        "Ollama); with only `EMBEDDINGS_API_KEY` set, OpenAI's own",
    )
    embeddings_api_key: str = Field(
        "", alias="EMBEDDINGS_API_KEY", description="key of the embeddings endpoint (enables OpenAI's when alone)"
    )
    embeddings_model: str = Field(
        "text-embedding-3-small", alias="EMBEDDINGS_MODEL", description="embedding model for chunks and questions"
    )
    embeddings_dimensions: int = Field(
        0,
        ge=0,
        alias="EMBEDDINGS_DIMENSIONS",
        description="ask for vectors this long (text-embedding-3 models; memory is 4 bytes x dimensions x chunks); "
        "0: the model's own",
    )
    embeddings_batch: int = Field(
        64, ge=1, le=2048, alias="EMBEDDINGS_BATCH", description="chunks per embeddings request while indexing"
    )
    embeddings_concurrency: int = Field(
        4, ge=1, le=32, alias="EMBEDDINGS_CONCURRENCY", description="embeddings requests in flight while indexing"
    )
    embeddings_timeout: float = Field(
        30.0, gt=0, alias="EMBEDDINGS_TIMEOUT", description="seconds per embeddings request while indexing"
    )
    embeddings_query_timeout: float = Field(
        2.0,
        gt=0,
        alias="EMBEDDINGS_QUERY_TIMEOUT",
        description="seconds a question waits for its embedding; past it the question is answered without "
        "the semantic ranking",
    )

    def roots(self) -> list[Path]:
        return [Path(part.strip()).expanduser().resolve() for part in self.repo_roots.split(",") if part.strip()]

    @property
    def embeddings_enabled(self) -> bool:
        return bool(self.embeddings_url.strip() or self.embeddings_api_key.strip())

    def resolved_index_dir(self, app: AppSettings) -> Path:
        return Path(self.index_dir) if self.index_dir else app.data_dir / "index"


class AISettings(_Base):
    # Providers, tried in AI_PROVIDERS order; each is enabled by its key (or base URL for local).
    openai_api_key: str = Field(
        "", alias="OPENAI_API_KEY", description="enables the `openai` provider (OpenAI's API through the official SDK)"
    )
    openai_base_url: str = Field(
        "",
        alias="OPENAI_BASE_URL",
        description="send the `openai` provider elsewhere (an OpenAI-compatible server or a proxy)",
    )
    openai_model: str = Field("gpt-4o-mini", alias="OPENAI_MODEL", description="model of the `openai` provider")
    openai_timeout: float = Field(
        0.0, alias="OPENAI_TIMEOUT", description="seconds per `openai` call (0: AI_TIMEOUT)"
    )
    anthropic_api_key: str = Field(
        "", alias="ANTHROPIC_API_KEY", description="enables the `anthropic` provider (Claude through the official SDK)"
    )
    anthropic_base_url: str = Field(
        "", alias="ANTHROPIC_BASE_URL", description="send the `anthropic` provider elsewhere (a proxy or gateway)"
    )
    anthropic_model: str = Field(
        "claude-haiku-4-5", alias="ANTHROPIC_MODEL", description="model of the `anthropic` provider"
    )
    anthropic_timeout: float = Field(
        0.0, alias="ANTHROPIC_TIMEOUT", description="seconds per `anthropic` call (0: AI_TIMEOUT)"
    )
    local_base_url: str = Field(
        "",
        alias="LOCAL_LLM_BASE_URL",
        description="enables the `local` provider: an OpenAI-compatible server (Ollama `http://host:11434/v1`, "
        "vLLM, llama.cpp)",
    )
    local_model: str = Field("llama3.1", alias="LOCAL_LLM_MODEL", description="model of the `local` provider")
    local_api_key: str = Field(
        "", alias="LOCAL_LLM_API_KEY", description="API key of the `local` server, if it wants one"
    )
    local_timeout: float = Field(
        0.0, alias="LOCAL_LLM_TIMEOUT", description="seconds per `local` call (0: AI_TIMEOUT)"
    )
    providers: str = Field(
        "",
        alias="AI_PROVIDERS",
        description="chain order, comma-separated among openai, anthropic, local; empty: every configured "
        "provider in that order. The offline answerer always comes last",
    )
    timeout: float = Field(30.0, alias="AI_TIMEOUT", description="seconds per model call (default of each provider)")
    turn_timeout: float = Field(
        60.0,
        alias="AI_TURN_TIMEOUT",
        description="seconds a turn may spend on providers (calls, backoff) before answering offline",
    )
    max_retries: int = Field(
        2,
        alias="AI_MAX_RETRIES",
        description="retries per provider and turn on timeouts, connection errors, 408, 409, 429 and 5xx "
        "(the SDKs' own retries are off)",
    )
    backoff_base: float = Field(
        0.5, alias="AI_BACKOFF_BASE", description="first retry delay in seconds (doubles per retry, with jitter)"
    )
    backoff_max: float = Field(8.0, alias="AI_BACKOFF_MAX", description="longest retry delay in seconds")
    retry_after_max: float = Field(
        10.0,
        alias="AI_RETRY_AFTER_MAX",
        description="longest `retry-after` waited for; a longer one cools the provider down for that long instead",
    )
    cooldown_failures: int = Field(
        3,
        alias="AI_COOLDOWN_FAILURES",
        description="failed calls in a row after which a provider is cooled down (skipped)",
    )
    cooldown_seconds: float = Field(
        60.0, alias="AI_COOLDOWN_SECONDS", description="how long a cooled-down provider is skipped"
    )
    max_output_tokens: int = Field(1024, alias="AI_MAX_OUTPUT_TOKENS", description="most tokens a model may write")
    history_tokens: int = Field(
        1200, alias="AI_HISTORY_TOKENS", description="token budget of the conversation history in a prompt"
    )
    sources_tokens: int = Field(
        6000, alias="AI_SOURCES_TOKENS", description="token budget of the search results (sources) in a prompt"
    )
    prices: str = Field(
        "",
        alias="AI_PRICES",
        description="price table additions/overrides, USD per million tokens: `model=input/output,…` "
        "(a model matches its longest prefix)",
    )
    user_daily_budget_usd: float = Field(
        0.0,
        alias="AI_USER_DAILY_BUDGET_USD",
        description="model spend per user and UTC day; beyond it answers come from the search results (0: no limit)",
    )
    max_answer_chars: int = Field(3000, alias="AI_MAX_ANSWER_CHARS", description="longest answer composed")


class TelemetrySettings(_Base):
    # The OpenTelemetry SDK reads the OTEL_* variables itself; they are declared here to be documented.
    otlp_endpoint: str = Field(
        "",
        alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP/HTTP collector (`http://otel-collector:4318`); tracing is off without it, "
        "OTEL_TRACES_EXPORTER or REPOTALK_TRACE_FILE",
    )
    traces_exporter: str = Field(
        "", alias="OTEL_TRACES_EXPORTER", description="`otlp`, `console` (spans on stdout) or `none` (off)"
    )
    trace_file: str = Field(
        "", alias="REPOTALK_TRACE_FILE", description="also write every span as a JSON line to this file (tests, bench)"
    )
    sample_ratio: float = Field(
        1.0,
        alias="TRACE_SAMPLE_RATIO",
        ge=0.0,
        le=1.0,
        description="share of turns traced (a turn's services follow the webhook's decision)",
    )
    max_traces_per_second: float = Field(
        50.0,
        alias="TRACE_MAX_PER_SECOND",
        ge=0.0,
        description="at most this many turns a second traced, per gateway process (0: no cap); every turn below it",
    )
    metrics_multiproc_dir: str = Field(
        "",
        alias="PROMETHEUS_MULTIPROC_DIR",
        description="metrics shared by a prefork worker's processes; empty: a temporary one under prefork",
    )


class Settings:
    """Every concern's settings, read once per process (``get_settings.cache_clear()`` in tests)."""

    def __init__(self) -> None:
        self.app = AppSettings()
        self.database = DatabaseSettings()
        self.broker = BrokerSettings()
        self.twilio = TwilioSettings()
        self.security = SecuritySettings()
        self.privacy = PrivacySettings()
        self.access = AccessSettings()
        self.conversation = ConversationSettings()
        self.search = SearchSettings()
        self.ai = AISettings()
        self.telemetry = TelemetrySettings()

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
        if self.security.secret_key.strip() in (DEV_SECRET_KEY, "") or len(self.security.secret_key.strip()) < 32:
            problems.append("SECRET_KEY (it keys the user-id hash) must be a random value of at least 32 characters "
                            "(e.g. `openssl rand -hex 32`)")
        problems.extend(_encryption_key_problems(self.security.encryption_keys))
        # Checked with or without a Twilio account: the token also guards webhooks and the sandbox API.
        if self.twilio.auth_token.strip() in (DEV_AUTH_TOKEN, ""):
            problems.append("TWILIO_AUTH_TOKEN must be set to your Twilio account's auth token"
                            + (" (TWILIO_ACCOUNT_SID is set)" if self.twilio.account_sid else ""))
        short = [code for code in self.access.codes() if len(code) < 12]
        if short:
            problems.append(f"INVITE_CODES: {len(short)} code(s) shorter than 12 characters can be guessed")
        if not self.database.url:
            problems.append("DATABASE_URL must be set")
        if self.broker.url.startswith("memory://"):
            problems.append("BROKER_URL must point at Redis")
        if problems:
            raise ProductionSettingsError(
                "refusing to start with REPOTALK_ENV=production:\n" + "\n".join(f"  - {p}" for p in problems)
            )


class ProductionSettingsError(RuntimeError):
    """Production would run with development or missing secrets; the message lists every problem."""


def _encryption_key_problems(spec: str) -> list[str]:
    keys = [key.strip() for key in spec.split(",") if key.strip()]
    if not keys:
        return ["ENCRYPTION_KEYS must be set (Fernet keys, newest first; generate one with `python -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`); '
                "without it personal data would be encrypted with a key derived from SECRET_KEY"]
    from cryptography.fernet import Fernet

    bad = 0
    for key in keys:
        try:
            Fernet(key.encode())
        except ValueError:
            bad += 1
    if bad:
        return [f"ENCRYPTION_KEYS: {bad} of {len(keys)} key(s) are not valid Fernet keys (32 url-safe base64 bytes)"]
    return []


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.check_production()
    return settings
