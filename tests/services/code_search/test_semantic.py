"""Semantic search through an OpenAI-compatible embeddings endpoint (a local server speaking the API,
reached through the openai SDK): a ranking of its own in the fusion, incremental, and never in the way
when the endpoint is missing or failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.code_search import semantic, vectors
from services.code_search.engine import index_repository, remove_repository, search
from tests.conftest import apply_env
from tests.fakes.embeddings_server import FakeEmbeddings

ROOT = Path(__file__).resolve().parents[3]
QUESTION = "where do we authenticate people signing in?"

FILES = {
    "accounts/gate.py": (
        "def check_credentials(user_name: str, password: str) -> bool:\n"
        "    \"\"\"True when the password matches the stored hash.\"\"\"\n"
        "    stored = HASHES.get(user_name)\n"
        "    return stored is not None and verify_hash(stored, password)\n"
    ),
    "ledger/totals.py": (
        "def amount_due(lines: list[tuple[int, int]]) -> int:\n"
        "    \"\"\"Sum of quantity times unit price, in cents.\"\"\"\n"
        "    return sum(quantity * cents for quantity, cents in lines)\n"
    ),
    "net/client.go": (
        "package net\n\n"
        "// Backoff waits longer after each failed attempt.\n"
        "func Backoff(attempt int) int {\n"
        "\treturn 100 << attempt\n"
        "}\n"
    ),
    "net/pool.py": (
        "def open_pool(size: int) -> list[object]:\n"
        "    \"\"\"Connections kept open for reuse.\"\"\"\n"
        "    return [object() for _ in range(size)]\n"
    ),
}


def make_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "shop")


@pytest.fixture
def fake(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings() as server:
        apply_env(monkeypatch, EMBEDDINGS_URL=server.base_url, EMBEDDINGS_API_KEY="test-key",
                  EMBEDDINGS_MODEL="toy-embed")
        semantic.reset_cooldown()
        yield server
    semantic.reset_cooldown()


def paths(query: str, **kwargs: object) -> list[str]:
    result = search(query, **kwargs)  # type: ignore[arg-type]
    assert result.error is None, result.error
    return [hit.path for hit in result.hits]


def test_without_an_endpoint_nothing_is_embedded_and_search_works(database: str, repo: Path) -> None:
    summary = index_repository(repo)
    assert summary.embeddings is None and "embeddings" not in summary.describe()
    assert "accounts/gate.py" not in paths(QUESTION)  # no word of the question is in the code
    assert paths("check_credentials")[0] == "accounts/gate.py"
    assert not any(Path(p).name == vectors.FILENAME for p in (repo.parent / "data").rglob("*"))


def test_a_question_sharing_no_word_with_the_code_finds_it_by_meaning(fake: FakeEmbeddings, repo: Path) -> None:
    summary = index_repository(repo)
    assert summary.embeddings is not None and summary.embeddings.error is None
    assert summary.embeddings.files == 4 and summary.embeddings.chunks == summary.chunks
    assert "embeddings: 4 files" in summary.describe()
    # The SDK sent every chunk once, with the chunk's path and symbol before its text.
    sent = fake.inputs
    assert len(sent) == summary.chunks and any(s.startswith("accounts/gate.py: check_credentials") for s in sent)
    assert all(r.json["encoding_format"] == "float" and r.json["model"] == "toy-embed" for r in fake.requests)
    assert fake.requests[0].headers["authorization"] == "Bearer test-key"

    result = search(QUESTION)
    assert result.error is None and result.hits
    assert result.hits[0].path == "accounts/gate.py" and result.hits[0].symbol == "check_credentials"
    assert "semantic" in result.kinds
    assert paths("how much money is owed on a bill")[0] == "ledger/totals.py"


def test_filters_apply_to_the_semantic_ranking(fake: FakeEmbeddings, repo: Path) -> None:
    index_repository(repo)
    assert paths("should we try again later", limit=3)[0] == "net/client.go"
    assert "net/client.go" not in paths("should we try again later lang:python")
    assert all(p.startswith("net/") for p in paths(f"{QUESTION} path:net/"))
    assert "accounts/gate.py" not in paths(f"{QUESTION} -path:accounts/")


def test_only_new_or_changed_text_is_sent_and_deleted_files_leave(fake: FakeEmbeddings, repo: Path) -> None:
    first = index_repository(repo)
    assert first.embeddings is not None
    chunks_before, vectors_before = semantic.store().counts()
    assert chunks_before == first.chunks and vectors_before == first.chunks

    requests = len(fake.requests)
    again = index_repository(repo)
    assert again.embeddings is not None and again.embeddings.files == 0
    assert len(fake.requests) == requests  # nothing changed: nothing sent

    sent_before = len(fake.inputs)
    with (repo / "ledger" / "totals.py").open("a") as handle:
        handle.write("\n\ndef refund(amount: int) -> int:\n    return -amount\n")
    changed = index_repository(repo)
    assert changed.embeddings is not None and changed.embeddings.files == 1
    new_inputs = fake.inputs[sent_before:]
    assert new_inputs and all(text.startswith("ledger/totals.py") for text in new_inputs)
    assert any("def refund" in text for text in new_inputs)
    assert changed.embeddings.sent == len(new_inputs) < changed.embeddings.chunks + 1

    (repo / "accounts" / "gate.py").unlink()
    removed = index_repository(repo)
    assert removed.embeddings is not None and removed.embeddings.removed == 1
    chunks_after, vectors_after = semantic.store().counts()
    assert chunks_after == removed.chunks and vectors_after == chunks_after  # no orphan vectors
    assert "accounts/gate.py" not in paths(QUESTION)

    remove_repository("shop")
    assert semantic.store().counts() == (0, 0)


def test_an_endpoint_down_while_indexing_leaves_the_rest_working_and_is_caught_up(
    fake: FakeEmbeddings, repo: Path
) -> None:
    fake.down = True
    summary = index_repository(repo)
    assert summary.files == 4  # the lexical index is whole
    assert summary.embeddings is not None and summary.embeddings.pending == 4
    assert "503" in (summary.embeddings.error or "") and "4 files pending" in summary.describe()
    assert paths("check_credentials")[0] == "accounts/gate.py"

    fake.down = False
    semantic.reset_cooldown()
    caught_up = index_repository(repo)  # no file changed: only the missing vectors are made
    assert caught_up.indexed == 0 and caught_up.embeddings is not None
    assert caught_up.embeddings.files == 4 and caught_up.embeddings.error is None
    assert paths(QUESTION)[0] == "accounts/gate.py"


def test_an_endpoint_failing_at_question_time_answers_without_it(fake: FakeEmbeddings, repo: Path) -> None:
    index_repository(repo)
    fake.down = True
    requests = len(fake.requests)
    result = search("check_credentials password")
    assert result.error is None and result.hits[0].path == "accounts/gate.py"
    assert "semantic" not in result.kinds
    assert len(fake.requests) == requests + 1
    # Cooling down: the next questions do not wait on an endpoint known to fail.
    search("amount_due")
    assert len(fake.requests) == requests + 1


def test_a_new_model_re_embeds_everything_and_drops_the_old_vectors(
    fake: FakeEmbeddings, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = index_repository(repo)
    apply_env(monkeypatch, EMBEDDINGS_MODEL="toy-embed-2", EMBEDDINGS_DIMENSIONS="24", EMBEDDINGS_BATCH="2")
    semantic.reset_cooldown()
    before = len(fake.requests)
    second = index_repository(repo)
    assert second.embeddings is not None and second.embeddings.files == 4
    assert second.embeddings.sent == first.chunks
    # Batches of two, several in flight: every text sent once.
    batches = [r.json["input"] for r in fake.requests[before:]]
    assert all(len(b) <= 2 for b in batches) and len(batches) == -(-first.chunks // 2)
    assert sorted(t for b in batches for t in b) == sorted(set(t for b in batches for t in b))
    assert fake.requests[-1].json["dimensions"] == 24 and fake.requests[-1].json["model"] == "toy-embed-2"
    assert semantic.store().counts() == (first.chunks, first.chunks)
    assert paths(QUESTION)[0] == "accounts/gate.py"


TRACED_CHILD = '''
import os, sys
from pathlib import Path
from tests.fakes.embeddings_server import FakeEmbeddings

with FakeEmbeddings() as fake:
    os.environ.update(EMBEDDINGS_URL=fake.base_url, EMBEDDINGS_API_KEY="k", EMBEDDINGS_MODEL="toy-embed",
                      EMBEDDINGS_BATCH="1")
    from libs.common import telemetry
    assert telemetry.setup("code_search")
    from services.code_search import semantic
    chunks = {"r\\x00a.py": [(1, "check_credentials", "def check_credentials(password): ...")],
              "r\\x00b.py": [(1, "", "RETRIES = 3")]}
    with telemetry.span("turn"):
        summary = semantic.sync("r", {"a.py": "h1", "b.py": "h2"}, lambda keys: {k: chunks[k] for k in keys},
                                Path(sys.argv[1]))
        assert summary is not None and summary.sent == 2, summary
        fake.down = True
        assert semantic.question_vector("where do people log in") is None
telemetry.shutdown()
'''


def test_each_embeddings_request_is_a_client_span_in_the_callers_trace(tmp_path: Path) -> None:
    """A child process (tracing is process-wide): the requests of an indexing run, made from its worker
    threads, and a question's failed one are client spans under the span that made them."""
    spans_path = tmp_path / "spans.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "EMBEDDINGS_"))}
    env.update(REPOTALK_TRACE_FILE=str(spans_path), REPOTALK_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-c", TRACED_CHILD, str(tmp_path / "index")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in spans_path.read_text().splitlines()]
    (turn,) = [s for s in spans if s["name"] == "turn"]
    calls = [s for s in spans if s["name"] == "embeddings.create"]
    assert len(calls) == 3 and all(s["parent_span_id"] == turn["span_id"] for s in calls)
    assert all(s["kind"] == "CLIENT" and s["attributes"]["gen_ai.request.model"] == "toy-embed" for s in calls)
    assert sorted(s["attributes"]["repotalk.embeddings.inputs"] for s in calls) == [1, 1, 1]
    assert sorted(s["status"] for s in calls) == ["ERROR", "UNSET", "UNSET"]
    assert not any("password" in json.dumps(s["attributes"]) for s in calls)  # no chunk text in attributes
