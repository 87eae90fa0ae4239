"""Mutual TLS and identities: refusals for an unknown certificate, a revoked participant,
an identity claimed with another's certificate, a result pushed for another's task, a
replayed result, a plain-text client, and a certificate from outside the federation."""

from __future__ import annotations

import threading

import grpc
import pytest
import torch
from grpc_helpers import ConstantClient, wait_until

from fedforge.client.types import RoundInfo
from fedforge.transport import (
    Backoff,
    ClientTLS,
    Refused,
    Registry,
    ServerTLS,
    TransportServer,
    connect,
    make_certs,
    revoke,
)
from fedforge.transport.certs import make_ca, make_participant_cert
from fedforge.transport.chunks import Payload, frames
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.service import PROTOCOL

IDS = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_certs(d, [*IDS, "mallory"])
    other = tmp_path_factory.mktemp("other-ca")
    make_ca(other, "someone else's CA")
    make_participant_cert(other, "alice")
    return d, other


@pytest.fixture()
def server(pki):
    d, _ = pki
    reg = Registry(IDS)  # mallory has a valid certificate but is not a member
    ts = TransportServer(reg, tls=ServerTLS.from_dir(d)).start()
    yield ts
    ts.stop(0)


def _once(**kw):
    return Backoff(first=0.05, attempts=1, **kw)


def _channel(address: str, tls: ClientTLS) -> grpc.Channel:
    return grpc.secure_channel(address, tls.credentials())


def test_mutual_tls_participants_join_and_train(pki, server):
    d, _ = pki
    threads = [
        threading.Thread(
            target=connect,
            args=(ConstantClient(float(i + 1)), server.address),
            kwargs=dict(client_id=cid, tls=ClientTLS.from_dir(d, cid)),
        )
        for i, cid in enumerate(IDS[:2])
    ]
    for t in threads:
        t.start()
    wait_until(lambda: len(server.registry) == 2, 30, "two participants")
    params = {"w": torch.zeros(3)}
    out = {cid: server.registry[cid].fit(params, RoundInfo(1, 7)) for cid in IDS[:2]}
    assert out["alice"].update["w"].tolist() == [1.0, 1.0, 1.0]
    assert out["bob"].update["w"].tolist() == [2.0, 2.0, 2.0]
    server.registry.finish("done")
    for t in threads:
        t.join(10)
        assert not t.is_alive()


def test_certificate_from_another_ca_fails_the_handshake(pki, server):
    _, other = pki
    with pytest.raises(ConnectionError):
        connect(
            ConstantClient(),
            server.address,
            client_id="alice",
            tls=ClientTLS(
                pki[0] / "ca.pem",
                other / "participants/alice.pem",
                other / "participants/alice.key",
            ),
            backoff=_once(),
        )
    assert len(server.registry) == 0


def test_plain_text_client_cannot_talk_to_a_tls_server(server):
    with pytest.raises(ConnectionError):
        connect(ConstantClient(), server.address, client_id="alice", insecure=True, backoff=_once())


def test_member_outside_the_federation_is_refused(pki, server):
    d, _ = pki
    with pytest.raises(Refused, match="unknown participant 'mallory'"):
        connect(
            ConstantClient(),
            server.address,
            client_id="mallory",
            tls=ClientTLS.from_dir(d, "mallory"),
            backoff=_once(),
        )


def test_claiming_another_identity_is_refused(pki, server):
    d, _ = pki
    with pytest.raises(Refused, match="claims to be 'bob' but its certificate names 'alice'"):
        connect(
            ConstantClient(),
            server.address,
            client_id="bob",
            tls=ClientTLS.from_dir(d, "alice"),
            backoff=_once(),
        )


def test_revoked_participant_is_refused(pki, tmp_path):
    d, _ = pki
    tls = ServerTLS(d / "server.pem", d / "server.key", d / "ca.pem", tmp_path / "revoked.json")
    ts = TransportServer(Registry(IDS), tls=tls).start()
    try:
        revoke(tmp_path, "carol")
        with pytest.raises(Refused, match="'carol' is revoked"):
            connect(
                ConstantClient(),
                ts.address,
                client_id="carol",
                tls=ClientTLS.from_dir(d, "carol"),
                backoff=_once(),
            )
    finally:
        ts.stop(0)


def _join_and_take_task(stub, cid: str, registry: Registry, params):
    session = stub.Join(pb.JoinRequest(client_id=cid, protocol=PROTOCOL)).session
    stream = stub.Attend(pb.AttendRequest(session=session))
    wait_until(lambda: cid in registry, 10, f"{cid} attending")
    task = registry.submit(cid, "fit", RoundInfo(1, 1), Payload(params))
    it = iter(stream)
    header = next(f for f in it if f.WhichOneof("body") == "task").task
    while next(it).WhichOneof("body") != "trailer":
        pass
    return session, header, task, stream


def _result(session: str, header, seq: int, value: float):
    head = pb.ResultHeader(
        session=session, task_id=header.task_id, seq=seq, kind="fit", num_examples=1
    )
    payload = Payload({"w": torch.full((2,), value)})
    head.tensors.extend(payload.layout.specs())
    head.payload_bytes = payload.total
    return list(frames(pb.Frame(result=head), payload))


def test_spoofed_and_replayed_results_are_refused(pki, server):
    d, _ = pki
    reg = server.registry
    params = {"w": torch.zeros(2)}
    alice = pb_grpc.FederationStub(_channel(server.address, ClientTLS.from_dir(d, "alice")))
    bob = pb_grpc.FederationStub(_channel(server.address, ClientTLS.from_dir(d, "bob")))
    a_session, _, _, a_stream = _join_and_take_task(alice, "alice", reg, params)
    b_session, b_header, b_task, b_stream = _join_and_take_task(bob, "bob", reg, params)

    # alice answers bob's task under her own session: the task is bound to bob
    with pytest.raises(grpc.RpcError) as err:
        alice.PushResult(iter(_result(a_session, b_header, 1, 9.0)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "was sent to 'bob', not to 'alice'" in err.value.details()
    # alice uses bob's session id: the session belongs to bob's certificate
    with pytest.raises(grpc.RpcError) as err:
        alice.PushResult(iter(_result(b_session, b_header, 1, 9.0)))
    assert "claims to be 'bob' but its certificate names 'alice'" in err.value.details()
    assert not b_task.done

    honest = _result(b_session, b_header, 1, 2.0)
    assert bob.PushResult(iter(honest)).accepted
    assert b_task.outcome.update["w"].tolist() == [2.0, 2.0]
    for replay in (honest, _result(b_session, b_header, 2, 5.0)):
        with pytest.raises(grpc.RpcError) as err:
            bob.PushResult(iter(replay))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "replay" in err.value.details()
    assert b_task.outcome.update["w"].tolist() == [2.0, 2.0]
    assert server.service.refusals == 4
    a_stream.cancel()
    b_stream.cancel()
