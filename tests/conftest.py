"""Shared fixtures. Fast tests use a deterministic fake embedder; `slow` ones load the real bundled model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
REPORT = CORPUS / "openinfra-annual-report-2023.md"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DOC_ID = "openinfra-annual-report-2023"


@pytest.fixture(scope="session")
def report_text() -> str:
    return REPORT.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def fake_embedder():
    from indexer.embed import FakeEmbedder

    return FakeEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    from indexer.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(threads=2)


@pytest.fixture(scope="session")
def counters(real_embedder):
    from indexer.chunking import Counters
    from indexer.tokens import count_tokens

    return Counters(tokens=count_tokens, pieces=real_embedder.count_pieces)


@pytest.fixture(scope="session")
def report_chunks(report_text, counters):
    from indexer.chunking import ChunkingConfig, chunk_markdown

    return chunk_markdown(DOC_ID, report_text, counters, ChunkingConfig())


@pytest.fixture(scope="session")
def fake_index(tmp_path_factory, fake_embedder) -> Path:
    from indexer.build import build_index

    out = tmp_path_factory.mktemp("fake") / "index"
    build_index(CORPUS, out, fake_embedder)
    return out


@pytest.fixture(scope="session")
def real_index(tmp_path_factory, real_embedder) -> Path:
    from indexer.build import build_index

    out = tmp_path_factory.mktemp("real") / "index"
    build_index(CORPUS, out, real_embedder)
    return out


@pytest.fixture(scope="session")
def xss_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("xss-corpus")
    shutil.copy(REPORT, d / REPORT.name)
    shutil.copy(FIXTURES / "xss-probe.md", d / "xss-probe.md")
    return d


def make_client(index_dir: Path, embedder, **settings):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    app = create_app(Settings(index_dir=index_dir, **settings), embedder=embedder, background_load=False)
    return TestClient(app)


@pytest.fixture(scope="session")
def client(real_index, real_embedder):
    with make_client(real_index, real_embedder) as c:
        yield c


@pytest.fixture(scope="session")
def fake_client(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder) as c:
        yield c
