"""Which files are indexed and why the others are not (names, sizes, .gitignore rules)."""

from __future__ import annotations

import os
from pathlib import Path

from services.code_search.walker import walk


def write(root: Path, rel: str, text: str = "x = 1\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_skips_are_counted_by_reason(sample_repo: Path) -> None:
    result = walk(sample_repo, 2 * 1024 * 1024)
    paths = {c.rel for c in result.files}
    assert "webhooks/security.py" in paths and "README.md" in paths and ".gitignore" in paths
    assert not paths & {"debug.log", "build/out.py", "local_settings.py", "docs/dump.sql", ".env"}
    assert not any(p.startswith(("web/node_modules/", "build/")) for p in paths)
    # bundle.js is minified by content only: the walker cannot tell, the pipeline will.
    assert "web/static/bundle.js" in paths
    assert dict(result.skipped) == {
        "gitignored": 3,  # debug.log, local_settings.py, build/ (a directory counts once)
        "vendored": 1,  # web/node_modules/
        "binary": 1,  # assets/logo.png
        "minified": 1,  # web/static/app.min.js
        "oversized": 1,  # docs/dump.sql
        "sensitive": 1,  # .env
    }


def test_nested_gitignores_and_negations_follow_git(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.gen.py\nout/\n")
    write(tmp_path, "pkg/.gitignore", "!keep.gen.py\n/local.py\n")
    for rel in ("a.gen.py", "pkg/keep.gen.py", "pkg/other.gen.py", "pkg/local.py", "pkg/sub/local.py", "out/x.py"):
        write(tmp_path, rel)
    os.makedirs(tmp_path / ".git" / "info")
    write(tmp_path, ".git/info/exclude", "secret_notes.txt\n")
    write(tmp_path, "secret_notes.txt", "notes\n")
    paths = {c.rel for c in walk(tmp_path, 1_000_000).files}
    assert paths == {".gitignore", "pkg/.gitignore", "pkg/keep.gen.py", "pkg/sub/local.py"}


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.py", "password = 'x'\n")
    repo = tmp_path / "repo"
    write(repo, "main.py")
    (repo / "link").symlink_to(outside, target_is_directory=True)
    (repo / "file_link.py").symlink_to(outside / "secret.py")
    result = walk(repo, 1_000_000)
    assert {c.rel for c in result.files} == {"main.py"}
    assert result.skipped["symlink"] == 2


def test_generated_lockfiles_and_empty_files_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "package-lock.json", "{}\n")
    write(tmp_path, "empty.py", "")
    write(tmp_path, "main.py")
    result = walk(tmp_path, 1_000_000)
    assert {c.rel for c in result.files} == {"main.py"}
    assert dict(result.skipped) == {"generated": 1, "empty": 1}
