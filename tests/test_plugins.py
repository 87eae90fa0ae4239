"""Plugins: stop before a round with a reason, add figures to records, state saved in checkpoints."""

import logging

import pytest

import fedforge as ff
from fedforge.server import Plugin, checkpoint
from tests.conftest import classifier_federation, make_server


class _Budget(Plugin):
    """Spends one unit per round; refuses the round that would exceed ``limit``."""

    name = "budget"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def before_round(self, server, round_):
        return (
            f"round {round_} would spend {self.spent + 1} > {self.limit}"
            if self.spent + 1 > self.limit
            else None
        )

    def after_round(self, server, record):
        self.spent += 1
        record["spent"] = self.spent

    def state(self):
        return {"spent": self.spent}

    def load_state(self, state):
        self.spent = state["spent"]


def test_plugin_stops_cleanly_with_a_final_checkpoint(tmp_path, caplog):
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=3, plugins=[_Budget(3)])
    with caplog.at_level(logging.WARNING):
        history = server.run(clients, 10, run_dir=tmp_path, progress=False, checkpoint_every=5)
    assert len(history) == 3 and [r["spent"] for r in history] == [1, 2, 3]
    assert "budget: round 4 would spend 4 > 3" in (server.stopped or "")
    assert "stopping before round 4" in caplog.text
    last = checkpoint.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert last.name == "round_000003"


def test_plugin_state_is_restored_on_resume(tmp_path):
    def build():
        model, clients, central = classifier_federation()
        return make_server(model, central, per_round=3, plugins=[_Budget(5)]), clients

    first, clients = build()
    first.run(clients, 10, run_dir=tmp_path, progress=False, stop_after=2)
    again, clients = build()
    assert again.resume_from(ff.RunDir(tmp_path))
    assert again.plugins[0].spent == 2
    history = again.run(clients, 10, run_dir=tmp_path, progress=False)
    assert [r["spent"] for r in history] == [1, 2, 3, 4, 5]


def test_plugin_names_must_differ():
    model, _, central = classifier_federation()
    with pytest.raises(ValueError, match="distinct names"):
        make_server(model, central, plugins=[_Budget(1), _Budget(2)])
