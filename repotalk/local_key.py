"""The API key `repotalk serve` keeps for its own user, so the API works out of the box on a laptop.

Embedded mode is a single-user development server bound to 127.0.0.1 by default. On its first
start it creates a key named ``local`` and keeps the token in ``<data dir>/local-api-key``, readable
by the owner only (like a Jupyter token or ~/.ssh), and prints it at every start. Only the hash is
in the database, as for any key. Nothing of the sort happens in distributed mode or in production:
there, keys exist only when an operator creates them (`repotalk api-key create`).
"""

from __future__ import annotations

import os
from pathlib import Path

from libs.common.api_keys import create_key, list_keys, revoke_key, verify

LOCAL_KEY_NAME = "local"
FILE_NAME = "local-api-key"


def key_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def ensure_local_key(data_dir: Path) -> str | None:
    """The token of the local key, created when no other key is active. None when the user manages
    keys themselves (other keys are active, none of them the kept local one): nothing is created."""
    path = key_file(data_dir)
    if path.exists():
        token = path.read_text().strip()
        if verify(token) is not None:
            return token
        path.unlink()  # revoked or from another database: useless
    active = {key.name for key in list_keys()}
    if active - {LOCAL_KEY_NAME}:
        return None
    if active:  # our own key, whose token file is gone: replace it
        revoke_key(LOCAL_KEY_NAME)
    token = create_key(LOCAL_KEY_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
