"""Adding and re-indexing repositories: local working trees, or git remotes cloned into the index dir.

Requests (the admin API, a git push) only validate and record the desired state in the catalog —
source, branch, a new generation — and announce it (``repo.index_requested``); every code_search
replica then converges its own index to it (``reconcile``). The indexing itself (``add_repository``)
runs on the replica.

A remote is cloned with the ``git`` binary (shallow, one branch) into ``<index dir>/checkouts/<name>``
and fetched again on every re-index. Only ordinary transports are allowed (no ``ext::``), git never
prompts for credentials, and a URL can never be read as an option.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from libs.common import bus
from libs.common.events import Envelope, RepoIndexRequested, Service
from libs.common.settings import get_settings
from services.code_search import catalog
from services.code_search.catalog import redact_url
from services.code_search.indexer import IndexSummary, index_repository, validate_name
from services.code_search.progress import tracked

log = logging.getLogger(__name__)

GIT_TIMEOUT = 600.0
# A request waits for this check of the remote (GitHub gives a push webhook 10 s; the admin API more).
LS_REMOTE_TIMEOUT = 30.0
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
_REMOTE_URL = re.compile(r"^(https?|ssh|git)://")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class RepoError(ValueError):
    """The request cannot be served as asked; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Source:
    url: str | None  # a git remote, or None for a local working tree
    path: Path | None


def checkouts_dir() -> Path:
    return get_settings().index_dir / "checkouts"


def is_git_url(source: str) -> bool:
    if _REMOTE_URL.match(source) or source.startswith("file://") or _SCP_LIKE.match(source):
        return True
    path = Path(source).expanduser()
    # A bare repository on this machine (HEAD, objects/ and refs/ at its top).
    return path.is_dir() and (path / "HEAD").is_file() and (path / "objects").is_dir() and not (path / ".git").exists()


def name_from_url(url: str) -> str:
    tail = re.split(r"[/:]", url.rstrip("/"))[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", tail.removesuffix(".git")) or "repo"


def _git(*args: str, cwd: Path | None = None, timeout: float = GIT_TIMEOUT) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise RepoError(503, "git is not installed on this server") from exc
    except subprocess.TimeoutExpired as exc:
        raise RepoError(504, f"git {args[0]} took longer than {timeout:g}s") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise RepoError(422, f"git {args[0]} failed: {redact_url(detail) if '://' in detail else detail}")
    return done.stdout


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def _check_url_and_branch(url: str, branch: str | None) -> None:
    if url.startswith("-"):
        raise RepoError(400, "a git URL cannot start with '-'")
    if branch is not None and (not _BRANCH.fullmatch(branch) or branch.startswith("-") or ".." in branch):
        raise RepoError(400, f"invalid branch name {branch!r}")


def sync_checkout(name: str, url: str, branch: str | None, *, replace: bool = False) -> Path:
    """Clone ``url`` (``branch``, default: the remote's default) into the checkouts dir, or fetch it.
    A checkout of another remote is refused (409), or with ``replace`` cloned afresh."""
    _check_url_and_branch(url, branch)
    target = checkouts_dir() / name
    if (target / ".git").is_dir():
        current = _git("remote", "get-url", "origin", cwd=target).strip()
        if current != url and replace:
            shutil.rmtree(target)
            return sync_checkout(name, url, branch)
        if current != url:
            raise RepoError(409, f"repository {name} is already cloned from another remote")
        wanted = branch or _git("rev-parse", "--abbrev-ref", "HEAD", cwd=target).strip()
        _git("fetch", "--depth", "1", "origin", "--", f"+refs/heads/{wanted}:refs/remotes/origin/{wanted}", cwd=target)
        _git("checkout", "-q", "-B", wanted, f"refs/remotes/origin/{wanted}", cwd=target)
        _git("reset", "-q", "--hard", f"refs/remotes/origin/{wanted}", cwd=target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{name}.cloning")
    shutil.rmtree(staging, ignore_errors=True)
    args = ["clone", "-q", "--depth", "1", "--single-branch", "--no-tags"]
    if branch:
        args += ["--branch", branch]
    try:
        _git(*args, "--", url, str(staging))
    except RepoError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def add_repository(
    source: str, name: str | None = None, branch: str | None = None, *, replace: bool = False
) -> IndexSummary:
    """Index a local working tree, or clone (or fetch) a git remote and index it, here and now — a
    replica's part of converging. ``replace``: a checkout of another remote is cloned afresh. Raises RepoError."""
    source = source.strip()
    if not source:
        raise RepoError(400, "give a local path or a git URL")
    try:
        if is_git_url(source):
            repo_name = validate_name(name or name_from_url(source))
            with _lock(repo_name), tracked(repo_name, "cloning") as progress:
                checkout = sync_checkout(repo_name, source, branch, replace=replace)
                return index_repository(checkout, name=repo_name, progress=progress)
        path = Path(source).expanduser()
        if not path.is_dir():
            raise RepoError(400, f"not a directory on this server, nor a git URL: {source}")
        if branch:
            raise RepoError(400, "a branch applies to git URLs only; check it out in the working tree instead")
        repo_name = validate_name(name or path.resolve().name)
        with _lock(repo_name), tracked(repo_name) as progress:
            return index_repository(path, name=repo_name, progress=progress)
    except ValueError as exc:
        if isinstance(exc, RepoError):
            raise
        raise RepoError(400, str(exc)) from exc


def normalise_remote(url: str) -> str:
    """host/owner/repo, lowercased, for comparing the remotes of a push and of an index."""
    url = url.strip()
    scp = _SCP_LIKE.match(url)
    if scp:
        host = url[url.index("@") + 1 : scp.end() - 1]
        path = url[scp.end() :]
    else:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path
    return f"{host}/{path.strip('/').removesuffix('.git')}".lower()


@dataclass(frozen=True)
class Accepted:
    """A request recorded: ``repo`` is to be indexed at ``generation`` (or later) by every replica."""

    repo: str
    generation: int
    source: str  # without credentials
    branch: str | None


def _announce(name: str, generation: int, reason: Literal["add", "reindex", "push"]) -> None:
    """Tell code_search to look now. Best effort: the request is already in the catalog, and every
    replica's periodic reconcile picks it up even when this event is lost (the broker down, say)."""
    payload = RepoIndexRequested(repo=name, generation=generation, reason=reason)
    correlation = f"repo:{name}:{generation}"
    try:
        bus.publish(Envelope.new(payload, correlation_id=correlation, source=Service.CODE_SEARCH.value))
    except Exception as exc:
        log.warning("could not announce %s; replicas will reconcile it anyway (%s)", correlation, type(exc).__name__)


def _check_remote(url: str, branch: str | None) -> None:
    """The remote answers (and has ``branch``): a typo is refused now, not after the request was accepted."""
    refs = [f"refs/heads/{branch}"] if branch else []
    heads = _git("ls-remote", "--heads", "--", url, *refs, timeout=LS_REMOTE_TIMEOUT)
    if branch and not heads.strip():
        raise RepoError(422, f"the remote has no branch {branch}")


def _local_path_of(source: str) -> Path | None:
    """The path on this server that a source reads: a working tree, a bare repository or a file:// URL."""
    if source.startswith("file://"):
        return Path(urlsplit(source).path)
    if _REMOTE_URL.match(source) or _SCP_LIKE.match(source):
        return None
    return Path(source).expanduser()


def check_allowed_path(source: str) -> None:
    """An API key must not turn the server's own files into search results: a path of the server is
    indexed through the API only under ``REPO_ROOTS`` (anywhere outside production when unset)."""
    local = _local_path_of(source)
    if local is None:
        return
    settings = get_settings()
    roots = settings.search.roots()
    if not roots:
        if settings.app.env == "production":
            raise RepoError(403, "indexing a path of the server through the API is off: set REPO_ROOTS to the "
                                 "directories it may read, or give a git URL")
        return
    # Resolved: a symlink or ".." must not lead out of a root.
    resolved = local.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise RepoError(403, f"{local} is outside the directories the API may index (REPO_ROOTS: {allowed})")


def request_add(source: str, name: str | None = None, branch: str | None = None) -> Accepted:
    """Validate a repository to add and record it in the catalog (a new generation); code_search replicas
    then clone and index it. Raises RepoError (the request's fault, with its HTTP status)."""
    source = source.strip()
    if not source:
        raise RepoError(400, "give a local path or a git URL")
    check_allowed_path(source)
    try:
        if is_git_url(source):
            repo_name = validate_name(name or name_from_url(source))
            _check_url_and_branch(source, branch)
            _check_remote(source, branch)
            wanted, root, url = source, "", redact_url(source) or None
        else:
            path = Path(source).expanduser()
            # Checked where the replicas run: this API is served by code_search (CODE_SEARCH_URL).
            if not path.is_dir():
                raise RepoError(400, f"not a directory on this server, nor a git URL: {source}")
            if branch:
                raise RepoError(400, "a branch applies to git URLs only; check it out in the working tree instead")
            path = path.resolve()
            repo_name = validate_name(name or path.name)
            wanted, root, url = str(path), str(path), None
    except ValueError as exc:
        if isinstance(exc, RepoError):
            raise
        raise RepoError(400, str(exc)) from exc
    known = catalog.repository(repo_name)
    if known is not None and known.source is not None and known.source != wanted:
        raise RepoError(409, f"repository {repo_name} is already indexed from {redact_url(known.source)}")
    generation = catalog.request_index(repo_name, wanted, branch, root=root, url=url)
    _announce(repo_name, generation, "add")
    return Accepted(repo=repo_name, generation=generation, source=redact_url(wanted), branch=branch)


def _source_of(entry: catalog.Desired) -> str:
    """Where to index a repository from; one indexed without the API (REPOS, `repotalk index`) is
    adopted from what was indexed: its working tree, or the remote of an older clone."""
    if entry.source:
        return entry.source
    root = Path(entry.root)
    if root.parent.name == "checkouts" and entry.url:
        return entry.url
    return entry.root


def request_reindex(name: str, reason: Literal["reindex", "push"] = "reindex") -> Accepted:
    """A new generation of ``name``: every replica indexes it again (a clone is fetched first)."""
    entry = catalog.repository(name)
    if entry is None:
        raise RepoError(404, f"no indexed repository named {name}")
    source = _source_of(entry)
    generation = catalog.request_index(name, source, entry.branch)
    _announce(name, generation, reason)
    return Accepted(repo=name, generation=generation, source=redact_url(source), branch=entry.branch)


def repositories_for_push(remotes: list[str], names: list[str]) -> dict[str, catalog.Desired]:
    """Repositories of the catalog that a push to one of ``remotes`` (or named ``names``) concerns."""
    wanted = {normalise_remote(u) for u in remotes if u}
    known = catalog.repositories()
    found = {
        name: entry for name, entry in known.items()
        if any(u and normalise_remote(u) in wanted for u in (entry.source if entry.source and is_git_url(entry.source)
                                                              else None, entry.url))
    }
    if not found:
        found = {n: known[n] for n in names if n in known}
    return found
