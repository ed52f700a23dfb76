"""What a newcomer and CI meet: the compose file validates, the CLIs fail cleanly, the README is true."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_docker_compose_file_validates():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `make test` installs Debian's docker-compose")
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "reportqa" in r.stdout and "/readyz" in r.stdout
    config = yaml.safe_load(r.stdout)
    services = config["services"]
    assert set(services) == {"indexer", "api", "lb", "qdrant"}
    assert services["qdrant"]["profiles"] == ["qdrant"]  # optional: only with --profile qdrant (test_qdrant_compose)
    # the indexer job builds a new version into the shared volume; the api replicas mount it read-only
    assert services["indexer"]["command"][:2] == ["sh", "-c"]
    assert "python -m indexer build" in services["indexer"]["command"][2]
    assert "python -m indexer export-onnx" in services["indexer"]["command"][2]  # the api's ONNX encoder
    assert "--out /data/index" in services["indexer"]["command"][2]
    assert services["indexer"]["restart"] == "no"
    assert any(v.endswith(":/data:rw") or v.endswith(":/data") for v in services["indexer"]["volumes"])
    assert services["api"]["volumes"] == ["reportqa-index:/data:ro"]
    assert services["api"]["depends_on"] == {"indexer": {"condition": "service_completed_successfully"}}
    assert services["api"]["scale"] == 2
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["command"] == ["python", "-m", "service.serve"]
    # the balancer is the only published port, and starts once a replica is healthy
    assert services["lb"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "ports" not in services["api"] and services["lb"]["ports"]
    assert services["lb"]["build"]["dockerfile"] == "deploy/haproxy.Dockerfile"


def test_compose_replica_count_is_a_setting():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `make test` installs Debian's docker-compose")
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                       env={**os.environ, "API_REPLICAS": "3", "REPORTQA_WORKERS": "2"})
    assert r.returncode == 0, r.stderr
    api = yaml.safe_load(r.stdout)["services"]["api"]
    assert api["scale"] == 3 and api["environment"]["REPORTQA_WORKERS"] == "2"


def _haproxy() -> str:
    exe = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is missing: `make test` (system-test-deps) installs Debian's haproxy")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return exe


def test_haproxy_config_is_valid_and_checks_readiness(tmp_path):
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    for needle in ("option httpchk GET /readyz", "http-check expect status 200", "retries 3",
                   "option redispatch", "retry-on conn-failure empty-response junk-response response-timeout 502 504",
                   "api:8000 check resolvers docker"):
        assert needle in cfg, needle
    # the stats socket's directory exists in the image, not necessarily here
    local = tmp_path / "haproxy.cfg"
    local.write_text(cfg.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    exe = _haproxy()
    r = subprocess.run([exe, "-c", "-f", str(local)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.cfg"
    broken.write_text(cfg.replace("junk-response", "junk-responze"))
    assert subprocess.run([exe, "-c", "-f", str(broken)], capture_output=True, timeout=30).returncode != 0


def test_kubernetes_manifests_render_and_validate_offline():
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import k8s_check
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    docs, _how = k8s_check.render()
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) >= {"Deployment", "Job", "Service", "PersistentVolumeClaim"}
    assert k8s_check.validate(docs) == []
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    api = pod["containers"][0]
    assert by_kind["Deployment"]["spec"]["replicas"] == 2
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["volumeMounts"][0]["readOnly"] is True
    job = by_kind["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][:2] == ["sh", "-c"] and "python -m indexer build" in job["command"][2]
    assert "python -m indexer export-onnx" in job["command"][2]
    claim = by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    # the validator does reject a broken manifest
    bad = [dict(d) for d in docs]
    dep = next(d for d in bad if d["kind"] == "Deployment")
    dep["spec"] = {**dep["spec"], "replicas": "two"}
    assert any("replicas" in e for e in k8s_check.validate(bad))


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
    assert r.returncode == 2 and "never on a reported one" in r.stderr and "report:test" in r.stderr
    r = _run("-m", "eval", "calibrate", "--sets", "report:dev,report:fresh")
    assert r.returncode == 2 and "report:fresh" in r.stderr


def test_eval_calibrate_never_scores_a_set_with_a_reader_trained_on_it(tmp_path):
    """The served reader was trained on report dev; with no fold reader trained without it, calibrate stops."""
    r = _run("-m", "eval", "calibrate", "--sets", "report:dev", "--fold-reader", "service/ask/reader",
             "--write", str(tmp_path / "calibration.json"), "--no-progress")
    assert r.returncode == 2 and "trained on report/dev" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "calibration.json").exists()


def test_the_wheel_ships_the_packaged_calibration(tmp_path):
    """`pip install .` into a clean venv gets /v1/ask's calibration, the reader and the query adapter it was fitted
    with: package data of service.ask and of indexer."""
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
    assert {"service/ask/reader/reader.json", "service/ask/reader/adapter.safetensors"} <= set(names)
    assert "service/ask/features.py" in names and "service/static/index.html" in names
    assert "service/answer.py" not in names
    shipped = json.loads(zipfile.ZipFile(wheel).read("service/ask/calibration.json"))
    assert shipped["features"] and shipped["fitted_for"]["model"] and shipped["threshold"] > 0
    reader = json.loads(zipfile.ZipFile(wheel).read("service/ask/reader/reader.json"))
    assert shipped["fitted_for"]["reader"]["adapter_sha256"] == reader["adapter_sha256"]  # fitted with it
    assert {"indexer/query_adapter/query_adapter.json", "indexer/query_adapter/adapter.safetensors"} <= set(names)
    adapter = json.loads(zipfile.ZipFile(wheel).read("indexer/query_adapter/query_adapter.json"))
    assert shipped["fitted_for"]["query_adapter"]["adapter_sha256"] == adapter["adapter_sha256"]


def test_kubernetes_fallback_render_matches_kubectl():
    """Without kubectl the check applies the kustomization itself; it must give the same resources."""
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import k8s_check
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    mine = k8s_check._render_here(k8s_check.K8S)
    assert k8s_check.validate(mine) == []

    def key(d):
        return d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: only the built-in rendering was checked")
    theirs, how = k8s_check.render()
    assert how == "kubectl kustomize"
    assert sorted(map(key, mine)) == sorted(map(key, theirs))
    images = {d["kind"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in mine + theirs if d["kind"] in ("Deployment", "Job")}
    assert set(images.values()) == {"reportqa:latest"}
