"""Links to the hosting site at the indexed commit: GitHub and GitLab (and self-hosted GitLab)."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_SCP_LIKE = re.compile(r"^[\w.-]+@([\w.-]+):(?!//)(.+)$")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")


def web_base(remote: str) -> tuple[str, str] | None:
    """(kind, https://host/owner/repo) of a GitHub or GitLab remote, else None."""
    scp = _SCP_LIKE.match(remote.strip())
    if scp:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(remote.strip())
        if parts.scheme not in ("https", "http", "ssh", "git") or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
    path = path.strip("/").removesuffix(".git")
    if path.count("/") < 1:
        return None
    lowered = host.lower()
    kind = "github" if lowered == "github.com" else "gitlab" if "gitlab" in lowered else None
    if kind is None:
        return None
    return kind, f"https://{lowered}/{path}"


def permalink(remote: str, commit: str, path: str, line: int, end_line: int) -> str | None:
    if not remote or not commit or not _COMMIT.fullmatch(commit):
        return None
    base = web_base(remote)
    if base is None:
        return None
    kind, root = base
    quoted = quote(path, safe="/")
    if kind == "github":
        anchor = f"#L{line}" + (f"-L{end_line}" if end_line > line else "")
        return f"{root}/blob/{commit}/{quoted}{anchor}"
    anchor = f"#L{line}" + (f"-{end_line}" if end_line > line else "")
    return f"{root}/-/blob/{commit}/{quoted}{anchor}"
