"""optuna-dashboard shows a study the sweeper wrote as a reader sees it: headless Chromium renders the
dashboard's pages from a real local server, and the objective's name and the trials' attributes are on them.

The pages are built by the dashboard's JavaScript from its JSON API; Chromium runs it (``--dump-dom`` after
``--virtual-time-budget``) and the test reads the rendered text. A screenshot of the trial page is written
to the test's temporary folder. Skips without Chromium unless ``DLAB_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import browser, run_browser
from tests.sweep.test_optuna_dashboard import dashboard as served
from tests.sweep.test_optuna_dashboard import wait_for_json
from tests.sweep.toy_sweeps import CURVE, run_app

TRIALS = 2
RENDER_BUDGET_MS = 15_000  # virtual time the page's scripts get to fetch the study and draw it
WINDOW = "1400,1800"
TAG = re.compile(r"<[^>]+>")


def rendered_text(dom: str) -> str:
    """The visible text of a dumped DOM: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", dom)).split())


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A two-trial study of the curve app (3 seeds per trial, no pruning) served by optuna-dashboard:
    (its address, the sweep folder)."""
    browser()  # skip (or fail in CI) before any work when there is no browser
    sweep = tmp_path_factory.mktemp("dashboard")
    run_app(CURVE, sweep, f"hydra.sweeper.n_trials={TRIALS}", "hydra.sweeper.pruner=none")
    with served(sweep) as (address, server, server_log):
        wait_for_json(f"{address}/api/studies", server, server_log)
        yield address, sweep


def page_text(url: str, profile: Path) -> str:
    return rendered_text(run_browser(url, profile, f"--virtual-time-budget={RENDER_BUDGET_MS}", "--dump-dom"))


def test_the_study_page_names_the_objective(dashboard, tmp_path):
    address, _ = dashboard
    text = page_text(f"{address}/dashboard/studies/1", tmp_path / "profile")
    assert "curve" in text  # the study
    assert "val/x" in text  # the objective's name, not "Objective 0"
    assert "Objective 0" not in text


def test_the_trial_page_shows_the_trials_attributes_and_a_screenshot_is_written(dashboard, tmp_path):
    address, sweep = dashboard
    url = f"{address}/dashboard/studies/1/trials"
    text = page_text(url, tmp_path / "profile")
    assert f"{TRIALS} Trials" in text
    assert "User Attributes" in text
    for attribute in ("run_dirs", "seeds", "fingerprints", "test/x", "val/x per seed", "val/x std"):
        assert attribute in text, attribute
    assert str(sweep / "0") in text  # trial 0's first job folder, as the run_dirs attribute lists it
    shot = tmp_path / "trials.png"
    run_browser(
        url,
        tmp_path / "profile",
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
        f"--screenshot={shot}",
        f"--window-size={WINDOW}",
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    width, height = (int(size) for size in WINDOW.split(","))
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0  # the page drew text and tables, not one flat colour
