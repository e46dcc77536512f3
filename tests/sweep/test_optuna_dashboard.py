"""optuna-dashboard reads a study the sweeper wrote: a real local server, asked through its JSON API."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
APP = Path(__file__).parents[1] / "apps" / "objective.py"
STARTUP_TIMEOUT_S = 60
POLL_INTERVAL_S = 0.5
SHUTDOWN_TIMEOUT_S = 10
TOY_TRIALS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for_json(url: str, server: subprocess.Popen, server_log: Path) -> dict:
    """The JSON at ``url`` once the server answers; fails when it exits or stays silent too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert server.poll() is None, f"optuna-dashboard exited: {server_log.read_text()[-2000:]}"
        try:
            return get_json(url)
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"optuna-dashboard did not answer {url}"
            time.sleep(POLL_INTERVAL_S)


def test_optuna_dashboard_lists_the_study_and_its_trials(tmp_path):
    env = {**os.environ, "TOY_SWEEP_DIR": str(tmp_path)}
    toy = subprocess.run(
        [sys.executable, str(APP), "-m", f"hydra.sweeper.n_trials={TOY_TRIALS}", "+extra=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert toy.returncode == 0, toy.stderr[-3000:]
    port = free_port()
    server_log = tmp_path / "dashboard.log"
    with server_log.open("w") as log:
        server = subprocess.Popen(
            [
                BIN / "optuna-dashboard",
                f"sqlite:///{tmp_path}/optuna.db",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        studies = wait_for_json(f"http://127.0.0.1:{port}/api/studies", server, server_log)["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "toy"]
        assert study["directions"] == ["maximize"]
        assert {"key": "fixed_overrides", "value": json.dumps({"+extra": "+extra=1"})} in study["user_attrs"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert [trial["state"] for trial in detail["trials"]] == ["Complete", "Fail", "Fail"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
