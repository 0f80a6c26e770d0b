"""`meterline dev` brings every process up healthy (the Stripe simulator too, without a
Stripe key) and stops all of them on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from connectors.environment import process_env
from connectors.kafka.broker import free_port
from tests.support import eventually

pytestmark = pytest.mark.e2e


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def test_dev_starts_every_process_and_the_stripe_simulator_and_ctrl_c_leaves_no_orphans(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    ports = {"http": free_port(), "worker": free_port(), "sink": free_port()}
    env = process_env(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"dev{unique}.",
        app_id=f"dev{unique}",
        http_port=ports["http"],
        worker_web_port=ports["worker"],
        sink_port=ports["sink"],
        data_dir=tmp_path,
    )
    env["COLUMNS"] = "200"
    for name in ("STRIPE_API_KEY", "STRIPE_API_BASE"):
        env.pop(name, None)  # no Stripe configured: the simulator runs
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.cli", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        eventually(lambda: any("dev stack ready" in line for line in lines), timeout=120)
        pids = {
            m.group(1): int(m.group(2))
            for line in lines
            if (m := re.search(r"started (\S+) \(pid (\d+)\)", line))
        }
        assert set(pids) == {"worker", "http", "stripe-sink", "stripe-sim"}
        assert _healthy(f"http://127.0.0.1:{ports['http']}/healthz")
        assert _healthy(f"http://127.0.0.1:{ports['worker']}/healthz")
        assert _healthy(f"http://127.0.0.1:{ports['sink']}/healthz")
        simulator = next(
            m.group(1) for line in lines if (m := re.search(r"simulator runs at (\S+)", line))
        )
        assert _healthy(f"{simulator}/_sim/stats")
        sink_log = (tmp_path / "logs" / "stripe-sink.log").read_text()
        assert "using the simulator at" not in sink_log  # pointed at the one started
        assert any(re.search(r"worker\s*\|", line) for line in lines), "logs carry a prefix"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        reader.join(10)
        stdout.close()
    assert process.returncode == 0, "".join(lines[-30:])
    assert any("all processes stopped" in line for line in lines)
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) outlived meterline dev"
