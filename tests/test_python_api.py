"""The README's deployment from Python: ``ff.serve`` a Server and ``ff.join`` two
TorchClients over mutual TLS on loopback; the result equals the same federation run in
one process."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
import torch

import fedforge as ff
from fedforge.data import breast_cancer, iid, split_by_partition
from fedforge.models import logistic_regression
from fedforge.transport.certs import make_all


def _federation() -> tuple[ff.Server, dict[str, ff.TorchClient]]:
    train, test = breast_cancer(0.2, seed=0)
    parts = iid(len(train), 2, seed=0)
    data = split_by_partition(train, parts, prefix="hospital")
    torch.manual_seed(0)
    model = logistic_regression(30, 2)
    task = ff.classification()
    clients = {  # each site its own model object, as on separate machines
        cid: ff.TorchClient(
            copy.deepcopy(model), cd.train, task, optimizer=ff.sgd(0.1), batch_size=32
        )
        for cid, cd in data.items()
    }
    server = ff.Server(
        ff.from_module(model),
        sampler=ff.Sampler(per_round=2, seed=0),
        central_eval=ff.central_evaluator(model, test, task),
        seed=0,
    )
    return server, clients


def test_serve_and_join_over_mutual_tls_equal_the_simulation(tmp_path: Path) -> None:
    make_all(tmp_path / "certs", ["hospital0000", "hospital0001"])
    server, clients = _federation()
    address: list[str] = []
    listening = threading.Event()
    out: dict[str, object] = {}

    def run_server() -> None:
        try:
            out["history"] = ff.serve(
                server,
                3,
                participants=sorted(clients),
                certs=tmp_path / "certs",
                on_listening=lambda a: (address.append(a), listening.set()),
                join_timeout=60,
                round_timeout=60,
            )
        except BaseException as exc:  # surfaced below
            out["error"] = exc
            listening.set()

    t = threading.Thread(target=run_server)
    t.start()
    assert listening.wait(30) and address, out.get("error")
    joins = [
        threading.Thread(
            target=lambda cid=cid, c=c: out.__setitem__(
                cid, ff.join(c, address[0], client_id=cid, certs=tmp_path / "certs")
            )
        )
        for cid, c in clients.items()
    ]
    for j in joins:
        j.start()
    for j in [*joins, t]:
        j.join(120)
    assert "error" not in out, out.get("error")
    history = out["history"]
    assert [r["round"] for r in history] == [1, 2, 3]  # type: ignore[union-attr]
    for cid in clients:
        assert out[cid].tasks == 3 and out[cid].finished == "training finished"  # type: ignore[attr-defined]

    ref_server, ref_clients = _federation()
    ref = ref_server.run(ref_clients, 3, backend=ff.Sequential(threads=1), progress=False)
    for a, b in zip(history, ref, strict=True):  # type: ignore[call-overload]
        assert a["central_accuracy"] == pytest.approx(b["central_accuracy"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_serve_and_join_refuse_to_guess_security() -> None:
    server, clients = _federation()
    with pytest.raises(ValueError, match="certs=DIR"):
        ff.serve(server, 1, participants=list(clients))
    with pytest.raises(ValueError, match="certs=DIR"):
        ff.join(clients["hospital0000"], "localhost:1", client_id="hospital0000")
