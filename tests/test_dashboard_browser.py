"""The dashboard in a real browser (Debian's headless Chromium driven by Selenium): a live
simulation's rounds appear and equal metrics.jsonl; in a gRPC deployment served by
``fedforge server --dashboard``, a participant process killed mid-round shows as dropped.

``make test`` installs Chromium and its driver (``make browser``); under CI a missing
browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_helpers import fedforge, participants_process, read_port, set_args

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2200",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.is_file() and DRIVER.is_file()):
        why = f"{CHROMIUM} and {DRIVER} are needed: `make browser` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(flag)
    # an explicit driver: Selenium Manager (which downloads drivers) is never asked
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(cond: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        out = cond()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _page_rounds(driver: Any) -> dict[int, dict[str, tuple[str, str]]]:
    """The rounds table: round -> key -> (data-value, shown text)."""
    script = """
      return [...document.querySelectorAll('#rounds-body tr')].map(tr => [
        Number(tr.dataset.round),
        [...tr.querySelectorAll('td')].map(td => [td.dataset.key, td.dataset.value ?? null, td.textContent])]);
    """
    return {r: {k: (v, t) for k, v, t in cells} for r, cells in driver.execute_script(script)}


def _page_participants(driver: Any) -> dict[str, list[str]]:
    """The participants table, read in one go (the page redraws it on every update)."""
    script = """
      return [...document.querySelectorAll('#participants-body tr')].map(tr => [
        tr.dataset.participant, [...tr.querySelectorAll('td')].map(td => td.textContent)]);
    """
    return dict(driver.execute_script(script))


def _records(run_dir: Path) -> dict[int, dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["round"]: r for r in map(json.loads, lines)}


def _check_numbers(page: dict[int, dict[str, tuple[str, str]]], records: dict[int, Any]) -> int:
    """Every number on the page equals its record's; returns how many were compared."""
    compared = 0
    for rnd, cells in page.items():
        rec = records[rnd]
        for key, (value, text) in cells.items():
            if key in ("round_time_s", "compression_up", "secagg_excluded"):
                continue  # derived or summarized by the dashboard, not as in the record
            if key in ("failed", "rejected"):
                assert int(value) == len(rec.get(key, {})), (rnd, key)
            elif value is not None:
                assert float(value) == rec[key], (rnd, key, value, rec[key])
                if not key.startswith("bytes"):  # the shown text rounds to 4 digits
                    assert float(text.replace(",", "")) == pytest.approx(rec[key], rel=1e-3)
            compared += 1
    return compared


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_a_live_simulation_on_the_page_equals_metrics_jsonl(tmp_path: Path, browser: Any) -> None:
    runs = tmp_path / "runs"
    sets = ["server.rounds=12", f"run.dir={runs}", "backend.kind=sequential"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "simulate.log", "wb")  # noqa: SIM115 - the child owns it
    sim = subprocess.Popen(
        [sys.executable, "-m", "fedforge.cli", "simulate", str(REPO / "configs/breast_cancer.toml"),
         *set_args(sets), "--no-progress"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    dash: subprocess.Popen[bytes] | None = None
    try:
        found = _wait(
            lambda: re.search(r"run directory: (\S+)", (tmp_path / "simulate.log").read_text()),
            60,
            "the run directory",
        )
        run_dir = Path(found.group(1))
        port_file = tmp_path / "dash.port"
        code = (
            "import sys; from pathlib import Path; from fedforge.dashboard import Dashboard;"
            "d = Dashboard(sys.argv[1], port=0, min_interval=0.2).start();"
            "Path(sys.argv[2]).write_text(str(d.port)); d.wait()"
        )
        dash = subprocess.Popen(
            [sys.executable, "-c", code, str(run_dir), str(port_file)],
            stdout=open(tmp_path / "dashboard.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        browser.get(f"http://127.0.0.1:{read_port(port_file)}/")
        # three rounds appear without a reload, while the simulation runs
        _wait(lambda: len(_page_rounds(browser)) >= 3, 60, "three rounds on the page")
        sim.wait(timeout=90)
        assert sim.returncode == 0, (tmp_path / "simulate.log").read_text()[-2000:]
        _wait(lambda: len(_page_rounds(browser)) == 12, 30, "all twelve rounds")
        _wait(lambda: browser.find_element("id", "run-state").text == "finished", 10, "finished")
        records = _records(run_dir)
        assert _check_numbers(_page_rounds(browser), records) >= 12 * 8
        assert browser.find_element("id", "round").text == "12"
        assert browser.find_element("id", "metric").get_attribute("value") == "accuracy"
        # the loss and accuracy charts were drawn (uPlot canvases)
        assert len(browser.find_elements("css selector", "#chart-loss canvas")) == 1
        assert len(browser.find_elements("css selector", "#chart-metric canvas")) == 1
        assert "name: breast-cancer" in browser.find_element("id", "config-text").text
        browser.save_screenshot(str(tmp_path / "dashboard-simulation.png"))
    finally:
        _stop(sim, *([dash] if dash else []))


def _dashboard_url(log: Path) -> str:
    found = _wait(lambda: re.search(r"dashboard: (http\S+)", log.read_text()), 60, "the dashboard")
    return str(found.group(1))


def test_a_participant_killed_mid_round_shows_as_dropped(tmp_path: Path, browser: Any) -> None:
    runs = tmp_path / "runs"
    sets = [
        "name=bc-dashboard",
        "data.dataset=breast_cancer",
        "data.num_clients=6",
        "model.name=logistic",
        "server.fraction=1.0",  # every connected participant, every round
        "server.rounds=10",
        f"run.dir={runs}",
    ]
    port_file = tmp_path / "port"
    server = fedforge(
        ["server", *set_args(sets), "--insecure", "--port-file", str(port_file),
         "--no-progress", "--dashboard", "0"],
        tmp_path / "server.log",
    )  # fmt: skip
    procs = [server]
    try:
        address = f"127.0.0.1:{read_port(port_file)}"
        steady = participants_process(address, sets, "0-2", 0.3, tmp_path / "steady.log")
        doomed = participants_process(address, sets, "3-5", 1.2, tmp_path / "doomed.log")
        procs += [steady, doomed]
        browser.get(_dashboard_url(tmp_path / "server.log"))
        _wait(lambda: len(_page_rounds(browser)) >= 2, 60, "two rounds on the page")
        status = runs.glob("*/federation.json")
        fed = next(status)
        _wait(lambda: json.loads(fed.read_text())["phase"].endswith("running"), 30, "a round")
        time.sleep(0.2)  # mid-round: the doomed participants take 1.2 s per fit, one at a time
        os.killpg(doomed.pid, signal.SIGKILL)
        killed_in = json.loads(fed.read_text())["round"]

        def dropped() -> list[str]:
            return sorted(
                c for c, cells in _page_participants(browser).items() if cells[1] == "dropped"
            )

        ids = _wait(lambda: dropped() or None, 60, "dropped participants on the page")
        _wait(lambda: len(_page_rounds(browser)) >= killed_in + 1, 60, "a round after the kill")
        records = _records(fed.parent)
        failed = records[killed_in].get("failed", {})
        assert failed and sorted(failed) == ids == dropped()
        assert all("disconnected" in why for why in failed.values())
        rows = _page_participants(browser)
        for cid in ids:  # status, connected, ..., reason
            assert rows[cid][1:3] == ["dropped", "no"] and "disconnected" in rows[cid][8]
        assert rows["client0000"][1:3] == ["answered", "yes"]
        assert _check_numbers(_page_rounds(browser), _records(fed.parent)) > 0
        browser.save_screenshot(str(tmp_path / "dashboard-deployment.png"))
        assert server.wait(timeout=90) == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        _stop(*procs)
