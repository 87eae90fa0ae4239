"""From a validated ``ExperimentConfig`` to a runnable simulation.

Each config variant maps to its builder by type (``singledispatch``), so a new
dataset or model is a new variant plus a new registered function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedforge import config as C
from fedforge import data as D
from fedforge import models
from fedforge.aggregate import (
    Aggregator,
    Bulyan,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    MultiKrum,
    NormBound,
    NormClip,
    Sum,
    TrimmedMean,
    WeightedMean,
)
from fedforge.algorithms import Algorithm, FedNova, Plain, Scaffold
from fedforge.backends import Backend, Processes, Sequential
from fedforge.client import TorchClient, adam, central_evaluator, classification, regression, sgd
from fedforge.client.tasks import Task
from fedforge.config.schema import _Partitioned
from fedforge.optim import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, ServerOptimizerSpec
from fedforge.params import ClientId, from_module
from fedforge.secagg import SecAggConfig, SecureAggregator
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import Auto, Complete, GraphChoice, Sparse
from fedforge.server import EvalPlan, RunDir, Sampler, Server
from fedforge.transforms import (
    Broadcast,
    Cast,
    ErrorFeedback,
    LowRank,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Transform,
    Zstd,
)

if TYPE_CHECKING:
    from fedforge.privacy import DPFedAvg, PrivacyAccountant
    from fedforge.secagg.aggregator import Channel

# --- data ---------------------------------------------------------------------------------


@singledispatch
def _split(p: Any, labels: Any, num_items: int, num_clients: int, seed: int) -> list[Any]:
    raise TypeError(f"no partitioner for {type(p).__name__}")


@_split.register
def _(p: C.IID, labels: Any, num_items: int, num_clients: int, seed: int) -> list[Any]:
    return D.iid(num_items, num_clients, seed=seed)


@_split.register
def _(p: C.Dirichlet, labels: Any, num_items: int, num_clients: int, seed: int) -> list[Any]:
    return D.dirichlet(labels, num_clients, p.alpha, seed=seed)


@_split.register
def _(p: C.Shards, labels: Any, num_items: int, num_clients: int, seed: int) -> list[Any]:
    return D.shards(labels, num_clients, p.shards_per_client, seed=seed)


def _federate(
    cfg: _Partitioned, train: Any, test: Any, seed: int, classes: int | None
) -> D.FederatedData:
    labels = D.partition_labels(train) if classes is not None else None
    if labels is None and not isinstance(cfg.partition, C.IID):
        raise C.ConfigError(
            f"data.partition.kind: {cfg.partition.kind!r} needs class labels; "
            "a regression dataset allows only 'iid'"
        )
    parts = _split(cfg.partition, labels, len(train), cfg.num_clients, seed)
    clients = D.split_by_partition(train, parts, eval_fraction=cfg.eval_fraction, seed=seed)
    shape = tuple(train.tensors[0].shape[1:])
    return D.FederatedData(clients, test, classes, shape)


@singledispatch
def build_data(cfg: Any, seed: int) -> D.FederatedData:
    raise TypeError(f"no data builder for {type(cfg).__name__}")


@build_data.register
def _(cfg: C.SyntheticLinear, seed: int) -> D.FederatedData:
    train = D.synthetic_linear(cfg.num_examples, cfg.weight, cfg.bias, cfg.noise, seed=seed)
    test = D.synthetic_linear(max(cfg.num_examples // 4, 1), cfg.weight, cfg.bias, 0.0, seed + 1)
    return _federate(cfg, train, test, seed, None)


@build_data.register
def _(cfg: C.BreastCancer, seed: int) -> D.FederatedData:
    train, test = D.breast_cancer(cfg.test_fraction, seed=seed)
    return _federate(cfg, train, test, seed, 2)


@build_data.register
def _(cfg: C.Digits, seed: int) -> D.FederatedData:
    train, test = D.digits(cfg.test_fraction, seed=seed)
    return _federate(cfg, train, test, seed, 10)


@build_data.register
def _(cfg: C.FashionMNIST, seed: int) -> D.FederatedData:
    train, test = D.fashion_mnist(cfg.path)
    return _federate(cfg, train, test, seed, 10)


@build_data.register
def _(cfg: C.Shakespeare, seed: int) -> D.FederatedData:
    return D.shakespeare(
        cfg.min_chars, cfg.max_clients, cfg.seq_len, cfg.stride, cfg.test_fraction, seed=seed
    )


# --- model --------------------------------------------------------------------------------


def _flat_features(fd: D.FederatedData) -> int:
    n = 1
    for d in fd.input_shape:
        n *= d
    return n


def _classes(fd: D.FederatedData, model: str) -> int:
    if fd.num_classes is None:
        raise C.ConfigError(f"model.name: {model!r} is a classifier but the dataset is regression")
    return fd.num_classes


@singledispatch
def build_model(cfg: Any, fd: D.FederatedData) -> nn.Module:
    raise TypeError(f"no model builder for {type(cfg).__name__}")


@build_model.register
def _(cfg: C.LinearModel, fd: D.FederatedData) -> nn.Module:
    return models.linear_regression(_flat_features(fd), fd.num_classes or 1)


@build_model.register
def _(cfg: C.LogisticModel, fd: D.FederatedData) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), models.logistic_regression(_flat_features(fd), _classes(fd, cfg.name))
    )


@build_model.register
def _(cfg: C.MLPModel, fd: D.FederatedData) -> nn.Module:
    return models.mlp(_flat_features(fd), cfg.hidden, _classes(fd, cfg.name))


@build_model.register
def _(cfg: C.CNNModel, fd: D.FederatedData) -> nn.Module:
    if len(fd.input_shape) != 3:
        raise C.ConfigError(f"model.name: 'cnn' needs image inputs (C, H, W), got {fd.input_shape}")
    c, h, _ = fd.input_shape
    return models.cnn(c, _classes(fd, cfg.name), h)


@build_model.register
def _(cfg: C.CharLSTMModel, fd: D.FederatedData) -> nn.Module:
    return models.char_lstm(_classes(fd, cfg.name), cfg.embed_dim, cfg.hidden, cfg.layers)


# --- server parts -------------------------------------------------------------------------

AGGREGATORS: dict[str, Callable[..., Aggregator]] = {
    "weighted_mean": WeightedMean,
    "mean": Mean,
    "sum": Sum,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
    "multi_krum": MultiKrum,
    "bulyan": Bulyan,
    "geometric_median": GeometricMedian,
    "norm_clip": NormClip,
}


def aggregator(cfg: C.AggregatorConfig) -> Aggregator:
    return AGGREGATORS[cfg.name](**cfg.model_dump(exclude={"name"}))


def server_optimizer(cfg: C.ServerOptConfig) -> ServerOptimizerSpec:
    fields = cfg.model_dump(exclude={"name"})
    table: dict[str, type[ServerOptimizerSpec]] = {
        "fedavg": FedAvg,
        "fedavgm": FedAvgM,
        "fedadam": FedAdam,
        "fedyogi": FedYogi,
        "fedadagrad": FedAdagrad,
    }
    return table[cfg.name](**fields)


def algorithm(cfg: C.ExperimentConfig) -> Algorithm:
    """``server.algorithm`` with the local step settings it needs from ``[client]``
    (the config validated that they fit)."""
    a, c = cfg.server.algorithm, cfg.client
    if a == "scaffold":
        return Scaffold(c.lr)
    if a == "fednova":
        return FedNova(c.momentum)
    return Plain()


def _client_optimizer(cfg: C.ClientConfig) -> Any:
    if cfg.optimizer == "adam":
        return adam(cfg.lr, cfg.weight_decay)
    return sgd(cfg.lr, cfg.momentum, cfg.weight_decay)


@singledispatch
def build_transform(cfg: Any) -> Transform:
    raise TypeError(f"no transform builder for {type(cfg).__name__}")


@build_transform.register
def _(cfg: C.CastT) -> Transform:
    return Cast(cfg.dtype)


@build_transform.register
def _(cfg: C.QuantizeT) -> Transform:
    return Quantize(cfg.bits, cfg.block)


@build_transform.register
def _(cfg: C.TopKT) -> Transform:
    return TopK(cfg.fraction)


@build_transform.register
def _(cfg: C.RandomKT) -> Transform:
    return RandomK(cfg.fraction, cfg.unbiased, shared=cfg.shared)


@build_transform.register
def _(cfg: C.LowRankT) -> Transform:
    return LowRank(cfg.rank, cfg.oversample, cfg.power_iters, cfg.unbiased)


@build_transform.register
def _(cfg: C.ZstdT) -> Transform:
    return Zstd(cfg.level)


@build_transform.register
def _(cfg: C.ErrorFeedbackT) -> Transform:
    return ErrorFeedback(*(build_transform(t) for t in cfg.inner))


def build_pipeline(cfgs: list[Any], key: str) -> Pipeline:
    try:
        return Pipeline([build_transform(t) for t in cfgs])
    except ValueError as exc:  # an order that cannot be decoded, named by its key
        raise C.ConfigError(f"{key}: {exc}") from exc


@dataclass
class Simulation:
    """Everything a configured run needs; ``run`` trains it into ``run_dir``."""

    config: C.ExperimentConfig
    data: D.FederatedData
    model: nn.Module
    task: Task
    clients: dict[ClientId, TorchClient]
    server: Server
    backend: Backend


def differential_privacy(
    p: C.PrivacyConfig, s: C.ServerConfig, population: int, sampler: Sampler
) -> tuple[DPFedAvg, PrivacyAccountant]:
    """The ``[privacy]`` section: DP-FedAvg as the server's aggregator (a clipped, noised
    sum over the participants of a round) and the accountant that reports epsilon."""
    try:
        from fedforge.privacy import AdaptiveClip, DPFedAvg, FixedSizeSampling, PrivacyAccountant
    except ImportError as exc:
        raise C.ConfigError(
            f"[privacy] needs the privacy extra (dp-accounting): pip install 'fedforge[privacy]' "
            f"({exc})"
        ) from None
    if s.aggregator != C.WeightedMeanAgg():
        raise C.ConfigError(
            f"server.aggregator: {s.aggregator.name!r} cannot be combined with [privacy]: "
            "DP-FedAvg aggregates with its own clipped sum over the round's participants; "
            "leave server.aggregator unset"
        )
    clip: float | AdaptiveClip
    if p.adaptive_clip is not None:
        clip = AdaptiveClip(**p.adaptive_clip.model_dump())
    else:
        assert p.clip is not None  # the config allows exactly one of the two
        clip = p.clip
    sampling = FixedSizeSampling(population, sampler.count(population))
    try:
        dp = DPFedAvg(noise_multiplier=p.noise_multiplier, clip=clip, sampling=sampling)
        return dp, PrivacyAccountant(dp, delta=p.delta, budget=p.budget)
    except ValueError as exc:
        raise C.ConfigError(f"privacy: {exc}") from None


def make_backend(b: C.BackendConfig) -> Backend:
    """The backend a ``[backend]`` section describes (Ray is imported only for kind ray)."""
    if b.kind == "processes":
        return Processes(b.workers, threads_per_worker=b.threads or 1)
    if b.kind == "vectorized":
        from fedforge.backends.vectorized import Vectorized

        return Vectorized(b.clients_per_batch, threads=b.threads)
    if b.kind == "ray":
        from fedforge.backends.ray_backend import RayBackend

        return RayBackend(
            address=b.address, num_cpus=b.num_cpus, actors=b.workers, threads_per_actor=b.threads
        )
    return Sequential(threads=b.threads)


def build(cfg: C.ExperimentConfig) -> Simulation:
    torch.manual_seed(cfg.seed)  # model initialisation only; training randomness is derived
    fd = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, fd)
    task = classification() if fd.num_classes is not None else regression()
    opt = _client_optimizer(cfg.client)
    c = cfg.client
    clients = {
        cid: TorchClient(
            model,
            cd.train,
            task,
            test=cd.test,
            optimizer=opt,
            epochs=c.epochs,
            steps=c.steps,
            batch_size=c.batch_size,
            prox_mu=c.prox_mu,
        )
        for cid, cd in fd.clients.items()
    }
    backend = make_backend(cfg.backend)
    server = build_server(cfg, fd, model, task, clients)
    return Simulation(cfg, fd, model, task, clients, server, backend)


def build_server(
    cfg: C.ExperimentConfig,
    fd: D.FederatedData,
    model: nn.Module,
    task: Task,
    clients: Mapping[ClientId, TorchClient],
    *,
    population: Collection[ClientId] | None = None,
    secagg_channel: Channel | None = None,
) -> Server:
    """The server a config describes, for ``clients``. Over gRPC, ``population`` is the live
    registry of participants and ``secagg_channel`` carries secure aggregation to them."""
    s = cfg.server
    sampler = Sampler(
        per_round=s.clients_per_round,
        fraction=s.fraction,
        min_clients=s.min_clients,
        over_select=s.over_select,
        seed=cfg.seed,
    )
    sampler.check(len(clients))
    with_eval = [cid for cid, cd in fd.clients.items() if cd.test is not None]
    fed = None
    if s.federated_eval_clients is not None:
        if len(with_eval) < len(clients):
            raise C.ConfigError(
                "server.federated_eval_clients: clients have no evaluation split; "
                "set data.eval_fraction > 0"
            )
        fed = Sampler(per_round=s.federated_eval_clients, seed=cfg.seed + 1)
        fed.check(len(clients))
    agg, plugins = aggregator(s.aggregator), []
    if cfg.privacy is not None:
        agg, accountant = differential_privacy(cfg.privacy, s, len(clients), sampler)
        plugins.append(accountant)
    if cfg.secagg is not None:
        members = population if population is not None else sorted(clients)
        # a simulation seeds the participants' secrets so that it replays; a deployment
        # (a channel to real participants) takes them from the OS CSPRNG
        seed = cfg.seed if secagg_channel is None else None
        agg = secure_aggregation(cfg.secagg, agg, members, secagg_channel, seed)
    try:
        return Server(
            from_module(model),
            sampler=sampler,
            aggregator=agg,
            plugins=plugins,
            update_bound=NormBound(s.update_norm_bound) if s.update_norm_bound else None,
            optimizer=server_optimizer(s.optimizer),
            central_eval=(
                central_evaluator(model, fd.test, task)
                if s.central_eval and fd.test is not None
                else None
            ),
            eval_plan=EvalPlan(every=s.eval_every, federated=fed),
            algorithm=algorithm(cfg),
            pipeline=build_pipeline(cfg.compression.uplink, "compression.uplink"),
            broadcast=(
                Broadcast(
                    build_pipeline(cfg.compression.downlink, "compression.downlink"),
                    keep=cfg.compression.downlink_keep,
                    seed=cfg.seed,
                )
                if cfg.compression.downlink is not None
                else None
            ),
            seed=cfg.seed,
        )
    except ValueError as exc:
        if cfg.secagg is None:
            raise
        raise C.ConfigError(f"secagg: {exc}") from None  # what SecAgg+ refused, and why


def secure_aggregation(
    c: C.SecAggSection,
    inner: Aggregator,
    population: Collection[ClientId],
    channel: Channel | None,
    seed: int | None,
) -> SecureAggregator:
    """The ``[secagg]`` section around the server's (linear) aggregator."""
    graph: GraphChoice
    if c.graph == "complete":
        graph = Complete()
    elif c.graph == "sparse":
        graph = Sparse(c.neighbours)
    else:
        graph = Auto(sparse=Sparse(c.neighbours))
    try:
        config = SecAggConfig(
            graph=graph,
            threshold=c.threshold,
            fixed=FixedPoint(bits=c.bits, clip=c.clip, max_weight=c.max_weight),
            clip_norm=c.clip_norm,
            noise_std=c.noise_std,
            seed=seed,
        )
        return SecureAggregator(inner, config, population=population, channel=channel)
    except ValueError as exc:
        raise C.ConfigError(f"secagg: {exc}") from None


def new_run_dir(cfg: C.ExperimentConfig) -> RunDir:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.run.dir) / f"{cfg.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    rd = RunDir(path)
    rd.write_config(C.dump(cfg))
    return rd
