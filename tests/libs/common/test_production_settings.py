"""With REPOTALK_ENV=production the settings refuse development, missing or weak secrets, at start."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from libs.common.settings import DEV_AUTH_TOKEN, DEV_SECRET_KEY, ProductionSettingsError, Settings, get_settings
from repotalk.cli import app as cli
from tests.conftest import apply_env

GOOD = {
    "REPOTALK_ENV": "production",
    "SECRET_KEY": "0f" * 32,
    "ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_AUTH_TOKEN": "a-real-twilio-auth-token-0123456789",
    "DATABASE_URL": "postgresql+psycopg://repotalk@db:5432/repotalk",
    "BROKER_URL": "redis://redis:6379/0",
}


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    apply_env(monkeypatch, **{**GOOD, **env})
    with pytest.raises(ProductionSettingsError) as caught:
        get_settings()
    return str(caught.value)


def test_production_starts_with_real_secrets(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, **GOOD)
    assert get_settings().app.env == "production"
    apply_env(monkeypatch, **GOOD, INVITE_CODES="a-long-invite-code-1,another-long-code")
    assert get_settings().access.restricted


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SECRET_KEY": DEV_SECRET_KEY}, "SECRET_KEY"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "short-secret"}, "SECRET_KEY"),
        ({"ENCRYPTION_KEYS": ""}, "ENCRYPTION_KEYS must be set"),
        ({"ENCRYPTION_KEYS": " , "}, "ENCRYPTION_KEYS must be set"),
        ({"ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},not-a-fernet-key"}, "1 of 2 key(s) are not valid"),
        ({"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN must be set to your Twilio account's auth token (TWILIO_ACC"),
        ({"TWILIO_AUTH_TOKEN": "", "TWILIO_ACCOUNT_SID": ""}, "TWILIO_AUTH_TOKEN"),
        ({"INVITE_CODES": "long-enough-code-1,short"}, "INVITE_CODES: 1 code(s) shorter than 12"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"BROKER_URL": "memory://localhost/"}, "BROKER_URL"),
    ],
)
def test_production_refuses(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    message = refusal(monkeypatch, **env)
    assert message.startswith("refusing to start with REPOTALK_ENV=production")
    assert named in message
    assert message.count("\n  - ") == 1  # only what is wrong is named


def test_every_problem_is_named_at_once(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SECRET_KEY", "ENCRYPTION_KEYS", "TWILIO_AUTH_TOKEN", "DATABASE_URL", "BROKER_URL"):
        monkeypatch.delenv(key, raising=False)
    apply_env(monkeypatch, REPOTALK_ENV="production")
    with pytest.raises(ProductionSettingsError) as caught:
        get_settings()
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "TWILIO_AUTH_TOKEN", "DATABASE_URL", "BROKER_URL"):
        assert name in str(caught.value)
    # The values themselves are never echoed.
    assert DEV_SECRET_KEY not in str(caught.value)


def test_development_and_test_keep_their_defaults(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("development", "test"):
        apply_env(monkeypatch, REPOTALK_ENV=env, SECRET_KEY=DEV_SECRET_KEY, ENCRYPTION_KEYS="")
        Settings().check_production()
        assert get_settings().app.env == env


def test_the_command_line_stops_with_the_reasons(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, **{**GOOD, "SECRET_KEY": DEV_SECRET_KEY})
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "refusing to start with REPOTALK_ENV=production" in result.output and "SECRET_KEY" in result.output
    assert "Traceback" not in result.output
    apply_env(monkeypatch, REPOTALK_ENV="staging")
    invalid = CliRunner().invoke(cli, ["migrate"])
    assert invalid.exit_code == 2 and "REPOTALK_ENV" in invalid.output
