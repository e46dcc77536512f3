"""optuna-dashboard reads a study the sweeper wrote: a real local server, asked through its JSON API."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from tests.sweep.toy_sweeps import OBJECTIVE, run_app

BIN = Path(sys.executable).parent
CURVE = Path(__file__).parents[1] / "apps" / "curve.py"
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


@contextmanager
def dashboard(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A local optuna-dashboard on ``<tmp_path>/optuna.db``: its address, process and log."""
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
        yield f"http://127.0.0.1:{port}", server, server_log
    finally:
        server.terminate()
        try:
            server.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_optuna_dashboard_lists_the_study_and_its_trials(tmp_path):
    run_app(OBJECTIVE, tmp_path, f"hydra.sweeper.n_trials={TOY_TRIALS}", "+extra=1")
    with dashboard(tmp_path) as (url, server, server_log):
        studies = wait_for_json(f"{url}/api/studies", server, server_log)["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "toy"]
        assert study["directions"] == ["maximize"]
        assert {"key": "fixed_overrides", "value": json.dumps({"+extra": "+extra=1"})} in study["user_attrs"]
        detail = get_json(f"{url}/api/studies/{study['study_id']}")
        assert [trial["state"] for trial in detail["trials"]] == ["Complete", "Fail", "Fail"]
        assert detail["objective_names"] == ["val/x"]  # the study's metric names


def test_optuna_dashboard_shows_intermediate_values_seeds_and_pruned_trials(tmp_path):
    """The curve app's trial 1 (x=0.2) falls behind trial 0 (x=0.9) after epoch 1 and is pruned."""
    study = optuna.create_study(
        study_name="curve", storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize"
    )
    for x in (0.9, 0.2):
        study.enqueue_trial({"x": x})
    run_app(CURVE, tmp_path, "hydra.sweeper.n_trials=2")
    with dashboard(tmp_path) as (url, server, server_log):
        studies = wait_for_json(f"{url}/api/studies", server, server_log)["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == "curve"]
        detail = get_json(f"{url}/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == ["val/x"]  # the study's metric names
    complete, pruned = detail["trials"]
    assert (complete["state"], pruned["state"]) == ("Complete", "Pruned")
    assert [point["step"] for point in complete["intermediate_values"]] == [1, 2, 3]
    assert [point["step"] for point in pruned["intermediate_values"]] == [1]
    attributes = {attr["key"]: json.loads(attr["value"]) for attr in complete["user_attrs"]}
    assert {"run_dirs", "seeds", "fingerprints", "val/x", "val/x per seed", "val/x std", "test/x"} <= set(
        attributes
    )
    assert attributes["seeds"] == [0, 1, 2] and len(attributes["val/x per seed"]) == 3
    pruned_attributes = {attr["key"]: json.loads(attr["value"]) for attr in pruned["user_attrs"]}
    assert pruned_attributes["pruned at epoch"] == [None, None, 1]
