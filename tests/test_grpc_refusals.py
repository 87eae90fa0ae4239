"""Refusals stay small in the log, and a busy port is refused."""

from __future__ import annotations

import logging

import grpc
import pytest

from fedforge.transport import Registry, TransportServer
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.service import PROTOCOL, PortInUse


def test_a_refused_join_with_a_huge_id_logs_a_few_hundred_bytes(caplog):
    ts = TransportServer(Registry(["a"]), insecure=True).start()
    huge = "x" * (1 << 20)
    try:
        with grpc.insecure_channel(ts.address) as ch, caplog.at_level(logging.INFO):
            stub = pb_grpc.FederationStub(ch)
            for cid in (huge, "y" * 300):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Join(pb.JoinRequest(client_id=cid, protocol=PROTOCOL), timeout=10)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert len(err.value.details()) < 1000
    finally:
        ts.stop(0)
    logged = sum(len(r.getMessage()) for r in caplog.records)
    assert logged < 4000, logged  # was 4 MiB for a 1 MiB id
    assert "1,048,576 characters" in caplog.text


def test_flooding_refusals_are_counted_not_logged_one_by_one(caplog):
    ts = TransportServer(Registry(["a"]), insecure=True).start()
    try:
        with grpc.insecure_channel(ts.address) as ch, caplog.at_level(logging.WARNING):
            stub = pb_grpc.FederationStub(ch)
            for i in range(200):
                with pytest.raises(grpc.RpcError):
                    stub.Join(pb.JoinRequest(client_id=f"nobody{i}", protocol=PROTOCOL))
    finally:
        ts.stop(0)
    assert ts.service.refusals == 200
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) < 200


def test_a_second_server_on_a_busy_port_is_refused():
    first = TransportServer(Registry(["a"]), insecure=True).start()
    try:
        with pytest.raises(PortInUse, match="in use"):
            TransportServer(Registry(["a"]), insecure=True, port=first.port)
    finally:
        first.stop(0)
