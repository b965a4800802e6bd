"""Personal data: keyed hashes for lookups, Fernet encryption at rest with key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from libs.common.settings import get_settings


def _secret() -> bytes:
    return get_settings().security.secret_key.encode()


def user_id_for(address: str) -> str:
    """The stable pseudonymous id of a WhatsApp address: HMAC-SHA256 of the normalised number."""
    number = normalise_address(address)
    digest = hmac.new(_secret(), b"user:" + number.encode(), hashlib.sha256).hexdigest()
    return "u_" + digest[:40]


def normalise_address(address: str) -> str:
    """'whatsapp:+1 415-555 0100' -> 'whatsapp:+14155550100' (the channel prefix is kept)."""
    address = address.strip()
    channel, sep, number = address.rpartition(":")
    digits = "".join(ch for ch in number if ch.isdigit())
    plus = "+" if number.strip().startswith("+") or digits else ""
    normalised = f"{plus}{digits}" if digits else number.strip()
    return f"{channel}{sep}{normalised}" if sep else normalised


def _keys(keys_spec: str, secret: str) -> list[str]:
    keys = [k.strip() for k in keys_spec.split(",") if k.strip()]
    if not keys:
        derived = hashlib.sha256(b"repotalk-encryption:" + secret.encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return keys


@lru_cache(maxsize=4)
def _fernet(keys_spec: str, secret: str) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in _keys(keys_spec, secret)])


@lru_cache(maxsize=4)
def _newest(keys_spec: str, secret: str) -> Fernet:
    return Fernet(_keys(keys_spec, secret)[0].encode())


def _cipher() -> MultiFernet:
    security = get_settings().security
    return _fernet(security.encryption_keys, security.secret_key)


def encrypt(plaintext: str) -> str:
    return _cipher().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: no configured key matches") from exc


def rotate(token: str) -> str:
    """Re-encrypt under the newest key (the first of ENCRYPTION_KEYS)."""
    return _cipher().rotate(token.encode("ascii")).decode("ascii")


def newest_key_decrypts(token: str) -> bool:
    """True when ``token`` is sealed by the newest key (nothing for rotate-keys to do)."""
    security = get_settings().security
    try:
        _newest(security.encryption_keys, security.secret_key).decrypt(token.encode("ascii"))
    except (InvalidToken, ValueError):
        return False
    return True
