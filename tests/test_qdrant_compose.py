"""The compose file's optional `qdrant` profile (validated with Debian's docker-compose; not run: no Docker engine)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT


def _config(*args: str, **env: str) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `make test` installs Debian's docker-compose")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REPORTQA_")}  # the file's defaults only
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), *args, "config"], capture_output=True,
                       text=True, env={**clean, **env})
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_the_qdrant_profile_validates_and_wires_the_indexer_and_the_api():
    default = _config()
    config = _config("--profile", "qdrant", REPORTQA_BACKEND="qdrant")
    for c in (default, config):
        assert c["services"]["qdrant"]["profiles"] == ["qdrant"]
    q = config["services"]["qdrant"]
    assert q["image"].startswith("qdrant/qdrant:v")
    assert "qdrant-storage:/qdrant/storage:rw" in q["volumes"] and "qdrant-storage" in config["volumes"]
    assert "6333" in [str(p) for p in q["expose"]] and "ports" not in q  # reachable by the other services only
    assert "/readyz" in " ".join(q["healthcheck"]["test"])
    for name in ("indexer", "api"):
        assert default["services"][name]["environment"]["REPORTQA_BACKEND"] == "faiss"  # FAISS unless asked
        envs = config["services"][name]["environment"]
        assert envs["REPORTQA_BACKEND"] == "qdrant" and envs["REPORTQA_QDRANT_URL"] == "http://qdrant:6333"
    assert float(config["services"]["indexer"]["environment"]["REPORTQA_QDRANT_WAIT"]) > 0
