"""What a newcomer and CI meet: the compose file validates, the CLIs fail cleanly, the README is true."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docker_compose_file_validates():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `make test` installs Debian's docker-compose")
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "reportqa" in r.stdout and "/readyz" in r.stdout


def test_torch_pin_is_where_the_install_reads_it():
    assert (ROOT / "requirements" / "torch.txt").read_text().split()[0] == "torch==2.13.0"
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()
    assert "requirements/torch.txt" in (ROOT / "Makefile").read_text()


def test_readme_quick_start_and_curl_examples():
    readme = (ROOT / "README.md").read_text()
    for needle in ("make serve", "make test", "curl", "/v1/search", "/v1/ask", "/healthz", "/readyz",
                   "/v1/index", "/metrics", "REPORTQA_INDEX_DIR", "python -m eval run"):
        assert needle in readme, needle


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_indexer_cli_reports_a_missing_corpus_cleanly(tmp_path):
    r = _run("-m", "indexer", "build", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "i"),
             "--fake-embedder")
    assert r.returncode == 3 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_indexer_cli_builds_with_a_summary(tmp_path):
    r = _run("-m", "indexer", "build", "--corpus", "corpus", "--out", str(tmp_path / "i"), "--fake-embedder",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    for word in ("documents", "sections", "chunks", "tokens", "warnings", "seconds"):
        assert word in r.stdout
    r = _run("-m", "indexer", "ensure", "--corpus", "corpus", "--out", str(tmp_path / "i"))
    assert r.returncode == 0  # built with another (fake) model: stale, so it is rebuilt for the real one
    assert "building" in r.stdout and "model" in r.stdout
    r = _run("-m", "indexer", "ensure", "--corpus", "corpus", "--out", str(tmp_path / "i"))
    assert r.returncode == 0 and "up to date" in r.stdout


def test_eval_cli_rejects_unknown_modes_and_test_calibration():
    r = _run("-m", "eval", "run", "--modes", "fuzzy", "--no-progress")
    assert r.returncode == 2 and "unknown mode" in r.stderr
    r = _run("-m", "eval", "calibrate", "--split", "test")
    assert r.returncode == 2 and "never on test" in r.stderr
    r = _run("-m", "eval", "calibrate", "--sets", "report:dev,report:fresh")
    assert r.returncode == 2 and "report:fresh" in r.stderr


def test_the_wheel_ships_the_packaged_calibration(tmp_path):
    """`pip install .` into a clean venv gets /v1/ask's calibration: it is package data of service.ask."""
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("indexer", "service", "eval"):  # a copy, so that the build leaves nothing in the worktree
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "reports"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "dist").glob("reportqa-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/ask/calibration.json" in names
    assert "service/ask/features.py" in names and "service/static/index.html" in names
    assert "service/answer.py" not in names
    shipped = json.loads(zipfile.ZipFile(wheel).read("service/ask/calibration.json"))
    assert shipped["features"] and shipped["fitted_for"]["model"] and shipped["threshold"] > 0
