"""The failover drill (`deploy/failover_test.py`, `make failover-test`), short: 2 replicas behind Debian's
HAProxy, one killed with SIGKILL under load and restarted, a new index version rolled through both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _haproxy() -> str | None:
    return shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin"))


@pytest.fixture(scope="module")
def drill():
    if _haproxy() is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is missing: `make test` (system-test-deps) installs Debian's haproxy")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "deploy" / "failover_test.py"), "--phase-seconds", "2",
                        "--clients", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line; exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.returncode, json.loads(lines[-1])


def test_no_client_request_fails_across_a_kill_a_restart_and_a_rolling_reload(drill, record_property):
    code, result = drill
    record_property("failover", {k: result.get(k) for k in ("requests", "failures", "versions_seen", "phases",
                                                              "haproxy_terminations")})
    assert result.get("error") is None, result
    # how HAProxy's sessions ended (its httplog) says where a failed request was cut
    assert result["problems"] == [], (result["problems"], result["haproxy_terminations"])
    assert code == 0 and result["ok"] is True
    assert result["failures"] == 0 and result["inconsistent"] == 0
    a, b = result["versions"]["A"], result["versions"]["B"]
    assert result["versions_seen"] == sorted([a, b])
    phases = result["phases"]
    # before the roll only A is served, after it only B; during it both (one replica reloaded, one not)
    for phase in ("steady", "killed", "restarted"):
        assert set(phases[phase]) == {a}, (phase, phases[phase])
    assert set(phases["after"]) == {b}
    assert phases["rolling"].get(a, 0) > 0 and phases["rolling"].get(b, 0) > 0
    assert result["requests"] == sum(sum(c.values()) for c in phases.values())
    # the surviving replica carried the load while the other was dead; the restarted one took traffic again
    assert set(result["replicas"]["killed"]) == {"r2"}
    assert result["replicas"]["restarted"].get("r1", 0) > 0
    events = [e["event"] for e in result["events"]]
    assert events.index("SIGKILL r1") < events.index("restart r1") < events.index("HAProxy marks r1 UP") \
        < events.index("reloaded r1") < events.index("reloaded r2")


def test_the_drill_counts_how_haproxy_sessions_ended(tmp_path, monkeypatch):
    """HAProxy's httplog lines (as its 2.6 writes them): a normal end, a retried one, one cut by the client,
    one killed (`on-marked-down shutdown-sessions`); its other lines are not requests."""
    monkeypatch.syspath_prepend(str(ROOT / "deploy"))
    from failover_test import termination_states

    log = tmp_path / "haproxy.log"
    log.write_text(
        '127.0.0.1:50824 [07/Dec/2026:09:56:56.765] api replicas/r1 0/0/0/1/1 200 466 - - ---- 1/1/0/0/0 0/0 '
        '"GET /readyz HTTP/1.1"\n'
        '127.0.0.1:50846 [07/Dec/2026:09:56:56.791] api replicas/r2 0/0/1/15/17 200 1031 - - ---- 3/3/2/0/+1 0/0 '
        '"POST /v1/ask HTTP/1.1"\n'
        '127.0.0.1:50850 [07/Dec/2026:09:56:57.002] api replicas/r1 0/0/0/-1/3 -1 0 - - CD-- 3/3/2/1/0 0/0 '
        '"GET /v1/search?q=x HTTP/1.1"\n'
        '127.0.0.1:50852 [07/Dec/2026:09:56:57.010] api replicas/r1 0/0/0/-1/900 -1 0 - - KD-- 3/3/2/1/1 0/0 '
        '"POST /v1/ask HTTP/1.1"\n'
        '[WARNING]  (6189) : Server replicas/r1 is DOWN, reason: Layer4 connection problem, info: "Connection '
        'refused", check duration: 0ms. 1 active and 0 backup servers left. 1 sessions active, 0 requeued.\n')
    assert termination_states(log) == {"normal": 2, "CD--": 1, "KD--": 1}
    assert termination_states(tmp_path / "missing.log") == {"normal": 0}

