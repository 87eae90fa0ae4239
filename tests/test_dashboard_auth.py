"""Who the dashboard answers: a token beyond loopback, Host checked on loopback, GET only;
and a slow disk does not hold up the page."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedforge.dashboard import Dashboard
from fedforge.dashboard.reader import RunReader


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"round": 1, "train_loss": 0.5}) + "\n")
    (tmp_path / "config.yaml").write_text("name: t\nserver:\n  rounds: 2\n")
    return tmp_path


@pytest.fixture
def open_dashboard(run_dir: Path) -> Iterator[Dashboard]:
    dash = Dashboard(run_dir, host="0.0.0.0", port=0).start()  # beyond loopback: a token
    yield dash
    dash.stop()


def test_beyond_loopback_a_request_without_the_token_is_refused(open_dashboard: Dashboard) -> None:
    dash = open_dashboard
    assert dash.token and len(dash.token) >= 24
    base = f"http://127.0.0.1:{dash.port}"  # requests stay on this machine
    for path in ("/", "/api/state", "/api/events", "/static/dashboard.js"):
        assert _get(base + path)[0] == 401, path
    assert _get(base + "/api/state", {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(base + "/?token=wrong")[0] == 401
    status, body = _get(base + "/api/state", {"Authorization": f"Bearer {dash.token}"})
    assert status == 200 and json.loads(body)["rounds"][0]["train_loss"] == 0.5
    assert _get(base + "/api/state", {"Cookie": f"fedforge_dashboard={dash.token}"})[0] == 200


def test_the_printed_link_sets_a_cookie_and_drops_the_token(open_dashboard: Dashboard) -> None:
    dash = open_dashboard
    assert dash.url == f"http://127.0.0.1:{dash.port}/?token={dash.token}"
    req = urllib.request.Request(dash.url)
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=10)
    assert e.value.code == 303 and e.value.headers["Location"] == "/"
    cookie = e.value.headers["Set-Cookie"]
    assert cookie.startswith(f"fedforge_dashboard={dash.token};") and "HttpOnly" in cookie


def test_read_only_every_write_method_is_refused(open_dashboard: Dashboard) -> None:
    auth = {"Authorization": f"Bearer {open_dashboard.token}"}
    base = f"http://127.0.0.1:{open_dashboard.port}"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _get(base + "/api/state", auth, method)[0] == 405, method


def test_on_loopback_no_token_but_only_loopback_host_names(run_dir: Path) -> None:
    dash = Dashboard(run_dir, host="127.0.0.1", port=0).start()
    try:
        assert dash.token is None and dash.url == f"http://127.0.0.1:{dash.port}/"
        base = f"http://127.0.0.1:{dash.port}"
        assert _get(base + "/api/state")[0] == 200
        assert _get(base + "/", {"Host": f"localhost:{dash.port}"})[0] == 200
        assert _get(base + "/", {"Host": "attacker.example"})[0] == 403
    finally:
        dash.stop()


def test_a_slow_disk_delays_updates_not_answers(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poll = RunReader.poll

    def slow_poll(self: RunReader):  # type: ignore[no-untyped-def]
        time.sleep(1.5)
        return poll(self)

    monkeypatch.setattr(RunReader, "poll", slow_poll)
    dash = Dashboard(run_dir, port=0, min_interval=0.05).start()
    try:
        base = f"http://127.0.0.1:{dash.port}"
        for _ in range(3):  # while a 1.5 s read is under way
            t0 = time.monotonic()
            assert _get(base + "/api/health")[0] == 200
            assert time.monotonic() - t0 < 0.5
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while json.loads(_get(base + "/api/state")[1])["version"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        dash.stop()
