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
# another author's questions, read in place from the workplace's shared/ beside the repository (never copied in);
# CI has it there. A clone elsewhere has not: those tests are skipped and say why.
EXTERNAL_DIR = ROOT.parent / "shared" / "datasets" / "report-external"
needs_external = pytest.mark.skipif(not (EXTERNAL_DIR / "questions.jsonl").is_file(),
                                    reason=f"report-external is not at {EXTERNAL_DIR} (shared/ beside the repo)")


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
def query_model(tmp_path_factory) -> Path:
    """The bundled model with the packaged query adapter merged in (indexer.query_adapter), as a model directory."""
    from indexer.query_adapter import query_model_dir

    return query_model_dir(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="session")
def query_embedder(query_model):
    """What the service encodes questions with (the query model on torch). Indexes are built with real_embedder,
    the plain model."""
    from indexer.embed import SentenceTransformerEmbedder
    from indexer.query_adapter import fingerprint, read_adapter

    return SentenceTransformerEmbedder(query_model, threads=2, query_adapter=fingerprint(read_adapter()[1]))


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
    calibrate_for_tests(out)
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


def damaged_copy(src: Path, dst: Path, weights: str) -> Path:
    """A copy of the artefact directory `src` (a reader, a query adapter) whose `weights` file has its last byte
    flipped: what a checksum must catch."""
    shutil.copytree(src, dst)
    raw = bytearray((dst / weights).read_bytes())
    raw[-1] ^= 0xFF
    (dst / weights).write_bytes(bytes(raw))
    return dst


def calibrate_for_tests(root: Path) -> None:
    """A fake-embedder index gets the packaged calibration re-labelled for its model and chunker, written
    beside it, so that /v1/ask answers (its confidences mean nothing: tests of the HTTP surface only)."""
    from indexer.store import load_index
    from service.ask.calibration import PACKAGED, Calibration

    Calibration.load(PACKAGED).relabelled_for(load_index(root).manifest).save(root / "calibration.json")


def make_client(index_dir: Path, embedder, **settings):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    app = create_app(Settings(index_dir=index_dir, **settings), embedder=embedder, background_load=False)
    return TestClient(app)


@pytest.fixture(scope="session")
def client(real_index, query_embedder):
    with make_client(real_index, query_embedder) as c:
        yield c


@pytest.fixture(scope="session")
def fake_client(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder) as c:
        yield c


# -- index lifecycle: two small versions whose answers tell them apart ---------------------------------

ADMIN_TOKEN = "test-admin-token"
MARKER_QUERY = "flamingo census"

_TOPICS = {
    "harbour": "The harbour authority dredged the northern channel so that container ships with deeper "
               "draughts could berth at the new quay, and the pilots rehearsed the approach in a simulator.",
    "orchard": "The orchard cooperative planted three hundred pear trees on the southern slope, grafted onto "
               "quince rootstock, and installed drip irrigation fed from the old mill pond.",
    "library": "The municipal library digitised its collection of nineteenth century maps, repaired the "
               "reading room roof and extended its opening hours on weekday evenings.",
}


def write_small_corpus(directory: Path, marker: str) -> Path:
    """Three ordinary documents and `census-<marker>.md`, the only one about a flamingo census: the top
    result of MARKER_QUERY tells which corpus (hence which index version) answered."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in _TOPICS.items():
        (directory / f"{name}.md").write_text(
            f"# The {name} report\n\n## Works\n\n{text}\n\n## Budget\n\nThe {name} works were paid from the "
            f"regional fund; the accounts were audited in March and published with the annual statement.\n",
            encoding="utf-8")
    (directory / f"census-{marker}.md").write_text(
        f"# Flamingo census {marker}\n\n## Counting\n\nVolunteers of team {marker} counted the flamingos on the "
        f"salt lake at dawn for the flamingo census, using drones and spotting scopes along the shore.\n",
        encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory, fake_embedder) -> tuple[Path, str, str]:
    """An index root holding version A (marker 'alpha') and version B (marker 'bravo'); CURRENT names A."""
    from indexer.build import build_index
    from indexer.store import set_current

    base = tmp_path_factory.mktemp("two-versions")
    root = base / "index"
    a = build_index(write_small_corpus(base / "corpus-a", "alpha"), root, fake_embedder).index_version
    b = build_index(write_small_corpus(base / "corpus-b", "bravo"), root, fake_embedder).index_version
    set_current(root, a)
    calibrate_for_tests(root)
    return root, a, b


def copy_root(two_versions, dest: Path) -> tuple[Path, str, str]:
    root, a, b = two_versions
    shutil.copytree(root, dest)
    return dest, a, b
