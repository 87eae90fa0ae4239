"""Flower's SecAgg+ (flwr 1.42) timed the way ``benchmarks/secagg.py`` times fedforge's.

Run with the Flower virtual environment (``bash benchmarks/peers/flower_env.sh`` prints its
interpreter), which pins protobuf < 7 and so cannot share fedforge's::

    .peers/flower/bin/python benchmarks/peers/flower_secagg.py --n 50 --d 100000 --dropout 0.3

Prints one JSON object. What runs is Flower's own code, unchanged: the server side is
``SecAggPlusWorkflow`` (``flwr.server.workflow``), the participant side a ``ClientApp``
with ``secaggplus_mod``; the plain baseline is ``default_fit_workflow`` with the same
ClientApp without the mod, both under Flower's ``FedAvg`` strategy. Only the carrier is
replaced: ``LocalGrid`` delivers each message to the destination node's ClientApp in this
process, through Flower's own protobuf serialization (``message_to_proto`` /
``message_from_proto``), the way a SuperLink and SuperNodes would, but without Ray,
sockets or polling, so the figures are the protocol's own cost (a lower bound on a real
Flower run) and compare with fedforge's in-process ``run_round``:

- ``participant_s``: CPU seconds each node spends inside its ClientApp over the round's
  stages, mean over the nodes that completed the round; the fit itself returns a fixed
  update, as in fedforge's benchmark. Process CPU time (``time.process_time``), not the
  calling thread's: Flower's Shamir sharing runs in a ``ThreadPoolExecutor``, and
  everything here runs one call at a time, so the process's CPU during a call is the
  call's;
- ``server_s``: CPU seconds of the workflow minus the nodes' time and minus all message
  (de)serialization (which fedforge's figures do not include either);
- ``up`` / ``down``: serialized message bytes per completed node;
- dropout: a mod in front of ``secaggplus_mod`` makes the chosen nodes fail the
  collect-masked-vectors stage, i.e. they shared keys and vanish before sending a masked
  vector, fedforge's ``DropoutPlan(Stage.SHARE, ...)``.

``num_shares`` and ``reconstruction_threshold`` are set to fedforge's graph for the same
n (k neighbours + the node itself, threshold t; see ``num_shares`` for odd counts), so both
protect the same way; the other settings are Flower's defaults (modulus 2^32, quantization
range 2^22, clipping 8).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.message_pb2 import Message as ProtoMessage  # type: ignore[attr-defined]
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity


class LocalGrid(Grid):
    """Delivers every message to its node's ClientApp here, serialized as on the wire."""

    def __init__(self, apps: dict[int, tuple[ClientApp, Context]]) -> None:
        self.apps = apps
        self.cpu = dict.fromkeys(apps, 0.0)  # node -> CPU s inside its ClientApp
        self.up = dict.fromkeys(apps, 0)  # node -> bytes it sent
        self.down = dict.fromkeys(apps, 0)  # node -> bytes it received
        self.serde_s = 0.0  # CPU s in (de)serialization, charged to nobody
        self._run = None

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self._run = run

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.apps)

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        raise NotImplementedError("LocalGrid only sends and receives")

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError("LocalGrid only sends and receives")

    def _wire(self, msg: Message) -> tuple[Message, int]:
        t0 = time.process_time()
        blob = message_to_proto(msg).SerializeToString()
        out = message_from_proto(ProtoMessage.FromString(blob))
        self.serde_s += time.process_time() - t0
        return out, len(blob)

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            delivered, nbytes = self._wire(msg)
            self.down[nid] += nbytes
            app, ctx = self.apps[nid]
            t0 = time.process_time()
            try:
                reply = app(delivered, ctx)
            except Exception as exc:  # noqa: BLE001 - a node failing is a dropout
                reply = Message(Error(code=0, reason=repr(exc)), reply_to=delivered)
            self.cpu[nid] += time.process_time() - t0
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            back, nbytes = self._wire(reply)
            self.up[nid] += nbytes
            replies.append(back)
        return replies


class FixedUpdate(NumPyClient):
    def __init__(self, update: np.ndarray, num_examples: int) -> None:
        self.update = update
        self.num_examples = num_examples

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        return [self.update], self.num_examples, {}


def _client_fn(client: NumPyClient):  # type: ignore[no-untyped-def]
    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return client.to_client()

    return client_fn


def dropout_mod(dropped: set[int]):  # type: ignore[no-untyped-def]
    """Nodes in ``dropped`` vanish when asked for their masked vector."""

    def mod(msg, ctx, call_next):  # type: ignore[no-untyped-def]
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if (
            msg.metadata.dst_node_id in dropped
            and cfg is not None
            and cfg.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS
        ):
            raise ConnectionError("dropped out")
        return call_next(msg, ctx)

    return mod


def num_shares(n: int, k: int) -> int:
    """Flower's ``num_shares`` for k neighbours: k + 1 (it counts the node itself), made
    odd when below n by taking one neighbour fewer (an even count breaks its setup stage:
    the nodes are told one share number and the ring is built with the next odd one), which
    if anything favours Flower."""
    shares = k + 1
    return shares - 1 if shares < n and shares % 2 == 0 else shares


def one_round(n: int, d: int, dropout: float, secure: bool, k: int, t: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    nodes = list(range(1001, 1001 + n))
    dropped = set(rng.choice(nodes, size=int(np.floor(dropout * n + 1e-9)), replace=False).tolist())
    apps: dict[int, tuple[ClientApp, Context]] = {}
    sent: dict[int, tuple[np.ndarray, int]] = {}
    for nid in nodes:
        update = rng.normal(0, 0.01, d).astype(np.float32)
        weight = int(rng.integers(1, 100))
        sent[nid] = (update, weight)
        client = FixedUpdate(update, weight)
        mods = [dropout_mod(dropped), secaggplus_mod] if secure else []
        app = ClientApp(client_fn=_client_fn(client), mods=mods)
        apps[nid] = (app, Context(1, nid, {}, RecordDict(), {}))
    grid = LocalGrid(apps)
    manager = SimpleClientManager()
    for nid in nodes:
        manager.register(GridClientProxy(nid, grid, 1))
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n)
    ctx = LegacyContext(Context(1, 0, {}, RecordDict(), {}), ServerConfig(1), strategy, manager)
    params = ndarrays_to_parameters([np.zeros(d, dtype=np.float32)])
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, True)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    workflow = (
        SecAggPlusWorkflow(num_shares=num_shares(n, k), reconstruction_threshold=t)
        if secure
        else default_fit_workflow
    )
    before = ctx.state.array_records[MAIN_PARAMS_RECORD]
    t0, w0 = time.process_time(), time.perf_counter()
    workflow(grid, ctx)
    total, wall = time.process_time() - t0, time.perf_counter() - w0
    after = ctx.state.array_records[MAIN_PARAMS_RECORD]
    ok = after is not before and isinstance(after, ArrayRecord)
    kept = [nid for nid in nodes if nid not in dropped] if secure else nodes
    err = float("nan")
    if ok:
        got = parameters_to_ndarrays(compat.arrayrecord_to_parameters(after, True))[0]
        want = sum(sent[c][1] * sent[c][0].astype(np.float64) for c in kept)
        want /= sum(sent[c][1] for c in kept)
        err = float(np.abs(got - want).max())
    return {
        "completed": bool(ok),
        "max_error": err,  # vs the exact weighted mean of the nodes that completed
        "server_s": total - sum(grid.cpu.values()) - grid.serde_s,
        "participant_s": float(np.mean([grid.cpu[c] for c in kept])),
        "participants_total_s": float(sum(grid.cpu.values())),
        "serde_s": grid.serde_s,
        "wall_s": wall,
        "up": float(np.mean([grid.up[c] for c in kept])),
        "down": float(np.mean([grid.down[c] for c in kept])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--k", type=int, required=True, help="neighbours (fedforge's graph)")
    p.add_argument("--t", type=int, required=True, help="threshold (fedforge's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    # what a ServerApp process is told by its runtime: its run, node (SuperLink) and task
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    import flwr

    out = {
        "flwr": flwr.__version__,
        "n": args.n,
        "d": args.d,
        "dropout": args.dropout,
        "num_shares": num_shares(args.n, args.k),
        "threshold": args.t,
        "plain": one_round(args.n, args.d, 0.0, False, args.k, args.t, args.seed),
        "secagg": one_round(args.n, args.d, args.dropout, True, args.k, args.t, args.seed),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
