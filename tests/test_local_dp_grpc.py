"""Local DP runs in the participant's place on every carrier: over a real gRPC socket the
server receives only noised updates (measured on what crossed the wire), and the run ends
bit for bit where the simulation with the same seeds ends."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import FitResult, RoundInfo
from fedforge.params import Params, from_module
from fedforge.participant import Participants, Plan, payload_of
from fedforge.privacy.clip import clip_update
from fedforge.privacy.local import LocalGaussian
from fedforge.transforms import Pipeline
from fedforge.transport import Quorum, Registry
from tests.grpc_helpers import participants_in_threads

IDS = ["a", "b", "c"]
CLIP, Z = 0.5, 0.8


class _Recording:
    """A participant that remembers the raw updates its ``fit`` produced (in its process)."""

    def __init__(self, inner: ff.TorchClient) -> None:
        self.inner = inner
        self.raw: list[Params] = []

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        res = self.inner.fit(params, info)
        self.raw.append({k: v.clone() for k, v in res.update.items()})
        return res

    def evaluate(self, params: Params, info: RoundInfo) -> ff.EvalResult:
        return self.inner.evaluate(params, info)


class _Wiretap(GrpcBackend):
    """The gRPC backend, keeping every fit upload exactly as it came off the socket."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry, round_timeout=60)
        self.uploads: list[tuple[str, int, Params]] = []

    def fit(self, jobs, params):  # type: ignore[no-untyped-def]
        for cid, res in super().fit(jobs, params):
            if isinstance(res, FitResult):
                self.uploads.append((cid, jobs[0][1].round, dict(res.update)))
            yield cid, res


def _federation() -> tuple[torch.nn.Module, dict[str, _Recording]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(40, 25)  # 1,025 coordinates per update
    g = torch.Generator().manual_seed(1)
    clients = {}
    for i, cid in enumerate(IDS):
        x = torch.randn(64, 40, generator=g) + i
        y = torch.randint(0, 25, (64,), generator=g)
        clients[cid] = _Recording(
            ff.TorchClient(model, TensorDataset(x, y), ff.classification(), optimizer=ff.sgd(0.5))
        )
    return model, clients


def _server(model: torch.nn.Module, plugins=()) -> ff.Server:  # type: ignore[no-untyped-def]
    return ff.Server(
        from_module(model),
        sampler=ff.Sampler(per_round=len(IDS), seed=0),
        pipeline=Pipeline([LocalGaussian(CLIP, Z, seed=7)]),
        plugins=plugins,
        seed=0,
    )


def test_local_dp_noise_is_added_by_the_participant_over_grpc() -> None:
    model, sim_clients = _federation()
    sim = _server(model)
    sim.run(sim_clients, 2, progress=False)

    model, clients = _federation()
    with participants_in_threads(clients) as registry:
        quorum = Quorum(registry, len(IDS), timeout=60)
        server = _server(model, plugins=[quorum])
        assert quorum.gather(server) is None
        backend = _Wiretap(registry)
        server.run(registry, 2, backend=backend, progress=False)

    # Bit for bit the simulation: the same noise, drawn in the participants' own stacks.
    for k, v in sim.params.items():
        assert torch.equal(server.params[k], v), k

    # What crossed the wire is the clipped update plus N(0, (z S)^2) per coordinate: never
    # the raw update, and the difference has the mechanism's spread.
    assert len(backend.uploads) == 2 * len(IDS)
    residuals = []
    for cid, rnd, upload in backend.uploads:
        ctx = server.transform_context(rnd, cid)
        got = server.pipeline.decode(payload_of(upload), ctx, server.params)
        raw = clients[cid].raw[rnd - 1]
        clipped, _ = clip_update(raw, CLIP)
        for k in raw:
            assert not torch.allclose(got[k], raw[k], atol=1e-3), (cid, rnd, k)
            residuals.append((got[k] - clipped[k]).flatten())
    noise = torch.cat(residuals)
    assert noise.numel() == 2 * len(IDS) * 1025
    std = float(noise.std())
    assert std == pytest.approx(Z * CLIP, rel=0.05)  # 6,150 draws: sampling error ~1 %
    assert abs(float(noise.mean())) < 4 * Z * CLIP / noise.numel() ** 0.5
    assert server.participant_state() == {}  # the local-DP secret stays with participants


def test_an_uplink_that_cannot_run_on_participants_is_refused_before_round_one() -> None:
    class _Custom:
        name = "custom"
        linear = True

        def encode(self, x, ctx, state):  # type: ignore[no-untyped-def]
            return x

        def decode(self, x, ctx):  # type: ignore[no-untyped-def]
            return x

    registry = Registry(IDS)
    backend = GrpcBackend(registry)
    with pytest.raises(ValueError, match="cannot run on gRPC participants") as err:
        backend.start(Participants(registry, Plan(Pipeline([_Custom()]))))
    assert "local_dp" in str(err.value)  # the message lists what can run there
    backend.start(Participants(registry, Plan(Pipeline([LocalGaussian(CLIP, Z)]))))
