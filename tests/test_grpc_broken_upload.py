"""A result stream that breaks after its header does not hold the round: the task is open
again, sent again on the participant's task channel, and its retry is accepted."""

from __future__ import annotations

import threading
import time

import grpc
import torch
from grpc_helpers import wait_until

from fedforge.client.types import FitResult, RoundInfo
from fedforge.transport import Registry, TransportServer
from fedforge.transport.chunks import Payload, frames
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.service import PROTOCOL


def _result(session: str, task_id: str, seq: int) -> list[pb.Frame]:
    head = pb.ResultHeader(session=session, task_id=task_id, seq=seq, kind="fit", num_examples=3)
    payload = Payload({"w": torch.full((4,), 2.0)})
    head.tensors.extend(payload.layout.specs())
    head.payload_bytes = payload.total
    return list(frames(pb.Frame(result=head), payload, chunk_bytes=4))


def _header_then_break(session: str, task_id: str, seq: int):
    yield _result(session, task_id, seq)[0]
    time.sleep(0.2)
    raise ConnectionError("the uplink broke")  # gRPC cancels the call


def test_a_broken_upload_is_retried_and_the_task_resolved_before_its_deadline():
    registry = Registry(["p"])
    ts = TransportServer(registry, insecure=True).start()
    try:
        with grpc.insecure_channel(ts.address) as ch:
            stub = pb_grpc.FederationStub(ch)
            session = stub.Join(pb.JoinRequest(client_id="p", protocol=PROTOCOL)).session
            headers: list[pb.TaskHeader] = []

            def attend() -> None:
                try:
                    for f in stub.Attend(pb.AttendRequest(session=session)):
                        if f.WhichOneof("body") == "task":
                            headers.append(f.task)
                except grpc.RpcError:
                    pass

            threading.Thread(target=attend, daemon=True).start()
            wait_until(lambda: "p" in registry, 10, "the task channel")
            task = registry.submit("p", "fit", RoundInfo(1, 0), Payload({"w": torch.zeros(4)}))
            wait_until(lambda: len(headers) == 1, 10, "the task")
            try:
                stub.PushResult(_header_then_break(session, task.id, 1), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
            # the task is open again and sent once more on the open task channel
            wait_until(lambda: len(headers) == 2, 10, "the task sent again")
            assert headers[1].task_id == task.id and not task.done
            ack = stub.PushResult(iter(_result(session, task.id, 2)), timeout=10)
            assert ack.accepted, ack.reason
            assert task.wait(5)
            assert isinstance(task.outcome, FitResult)
            assert task.outcome.update["w"].tolist() == [2.0] * 4
    finally:
        ts.stop(0)
