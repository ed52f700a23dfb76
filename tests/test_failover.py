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
    record_property("failover", {k: result.get(k) for k in ("requests", "failures", "versions_seen", "phases")})
    assert result.get("error") is None, result
    assert result["problems"] == [], result["problems"]
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
