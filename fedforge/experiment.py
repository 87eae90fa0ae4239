"""From a validated ``ExperimentConfig`` to a runnable simulation.

Every component of the config is a ``fedforge.components`` declaration and is built by
its own ``build``; this module wires the built parts into a ``Server``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedforge import components
from fedforge import config as C
from fedforge import data as D
from fedforge.aggregate import Aggregator, NormBound
from fedforge.algorithms import Algorithm
from fedforge.backends import Backend, Processes, Sequential
from fedforge.client import (
    Client,
    TorchClient,
    adam,
    adamw,
    central_evaluator,
    classification,
    regression,
    sgd,
)
from fedforge.client.tasks import Task
from fedforge.components import Declaration
from fedforge.optim import ServerOptimizerSpec
from fedforge.params import ClientId, Params, from_module
from fedforge.secagg import SecAggConfig, SecureAggregator
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import Auto, Complete, GraphChoice, Sparse
from fedforge.server import EvalPlan, RunDir, Sampler, Server
from fedforge.transforms import Broadcast, Pipeline

if TYPE_CHECKING:
    from fedforge.privacy import DPFedAvg, PrivacyAccountant
    from fedforge.secagg.aggregator import Channel


def build_data(cfg: Declaration, seed: int) -> D.FederatedData:
    """The ``[data]`` section's participants and test set."""
    data: D.FederatedData = cfg.build(seed)
    return data


def site_tables(cfg: C.ExperimentConfig) -> tuple[dict[ClientId, Any], dict[str, Any]]:
    """Each site's own file, read through the federation's schema, and the federation's
    preprocessing from the sites' sums (``fedforge.data.site_data``), exactly as a
    deployed server computes it; what does not fit is a ``ConfigError`` naming it."""
    from fedforge.config.site import load_site
    from fedforge.data.site_data import SiteData, SiteDataError, merge_stats

    data = cfg.data
    assert isinstance(data, SiteData)
    sites = [load_site(p) for p in cfg.federation.sites]
    ids = [s.id for s in sites]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise C.ConfigError(
            f"federation.sites: site id(s) {twice} appear in more than one site config"
        )
    try:
        tables = {s.id: data.read(s.data.path, s.data.format) for s in sites}
        stats = {sid: data.local_stats(t, cfg.seed, sid) for sid, t in tables.items()}
        return tables, data.preprocessing(merge_stats(stats))
    except SiteDataError as exc:
        raise C.ConfigError(str(exc)) from None


def site_federation(cfg: C.ExperimentConfig) -> tuple[D.FederatedData, dict[str, Any]]:
    """A simulation of sites that bring their own files (``[federation] sites``): each site
    reads only its own file and encodes it with the federation's preprocessing."""
    from fedforge.data.site_data import SiteDataError

    data: Any = cfg.data
    tables, prep = site_tables(cfg)
    try:
        clients = {sid: data.client_data(t, prep, cfg.seed, sid) for sid, t in tables.items()}
    except SiteDataError as exc:
        raise C.ConfigError(str(exc)) from None
    shape, classes = data.shape(prep)
    return D.FederatedData(clients, None, classes, shape), prep


def federation_doc(cfg: C.ExperimentConfig, prep: Mapping[str, Any] | None) -> str:
    """What a site needs of the federation config, as JSON sent with every task: the data
    schema, the model, local training and the seed (so sites cannot drift), and once known
    the federation's preprocessing. Never a site's path: the config names none."""
    import json

    return json.dumps(
        {
            "seed": cfg.seed,
            "data": cfg.data.model_dump(mode="json"),
            "model": cfg.model.model_dump(mode="json"),
            "client": cfg.client.model_dump(mode="json"),
            "evaluation": cfg.evaluation.model_dump(mode="json"),
            "preprocessing": prep,
        },
        sort_keys=True,
    )


def torch_client(c: C.ClientConfig, model: nn.Module, cd: D.ClientData, task: Task) -> TorchClient:
    """A participant's local training as ``[client]`` describes it."""
    return TorchClient(
        model,
        cd.train,
        task,
        test=cd.test,
        optimizer=_client_optimizer(c),
        epochs=c.epochs,
        steps=c.steps,
        batch_size=c.batch_size,
        prox_mu=c.prox_mu,
    )


def build_model(cfg: Declaration, fd: D.FederatedData) -> nn.Module:
    """The ``[model]`` section, sized for ``fd``'s inputs and classes."""
    model: nn.Module = cfg.build(fd.input_shape, fd.num_classes)
    return model


def aggregator(cfg: Declaration) -> Aggregator:
    agg: Aggregator = cfg.build()
    return agg


def server_optimizer(cfg: Declaration) -> ServerOptimizerSpec:
    spec: ServerOptimizerSpec = cfg.build()
    return spec


def algorithm(cfg: C.ExperimentConfig) -> Algorithm:
    """``server.algorithm``, its fields taken from ``[client]`` by the keys it names
    (``client_keys``; the config validated that they fit)."""
    decl = components.get("algorithm", cfg.server.algorithm)
    keys: Mapping[str, str] = getattr(decl.runtime, "client_keys", {})
    alg: Algorithm = decl.model_validate(
        {field: getattr(cfg.client, key) for field, key in keys.items()}
    ).build()
    return alg


def _client_optimizer(cfg: C.ClientConfig) -> Any:
    if cfg.optimizer == "adam":
        return adam(cfg.lr, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return adamw(cfg.lr, cfg.weight_decay)
    return sgd(cfg.lr, cfg.momentum, cfg.weight_decay)


def build_pipeline(cfgs: Sequence[Declaration], key: str) -> Pipeline:
    try:
        return Pipeline([t.build() for t in cfgs])
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
    preprocessing: dict[str, Any] | None = None  # sites' federation: computed from their sums


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
    if s.aggregator != type(s).model_fields["aggregator"].get_default(call_default_factory=True):
        raise C.ConfigError(
            f"server.aggregator: {getattr(s.aggregator, 'name', '')!r} cannot be combined with [privacy]: "
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


def evaluation_task(e: C.EvaluationConfig, num_classes: int | None) -> Task:
    """The task of data with ``num_classes`` (None: a regression), reporting the
    ``[evaluation]`` section's metrics (None: the task's own)."""
    if num_classes is None and e.confusion_matrix:
        raise C.ConfigError("evaluation.confusion_matrix: the dataset is a regression")
    make = classification if num_classes is not None else regression
    names = list(e.metrics if e.metrics is not None else make().metrics.names)
    try:
        return make([*names, "confusion_matrix"] if e.confusion_matrix else names)
    except ValueError as exc:  # a classification metric for a regression
        raise C.ConfigError(f"evaluation.metrics: {exc}") from None


def is_llm(cfg: C.ExperimentConfig) -> bool:
    return getattr(cfg.model, "name", None) == "causal_lm"


def llm_client(c: C.ClientConfig, model: Any, blocks: Any) -> Any:
    """A language-model site's ``LLMClient`` on the shared ``model``: ``[client]`` as its
    local plan (``steps``, or ``epochs`` passes over its blocks)."""
    import math

    from fedforge.client.local import LocalPlan
    from fedforge.llm.client import LLMClient, default_autocast

    per_pass = math.ceil(len(blocks.train) / (c.batch_size * c.grad_accum))
    plan = LocalPlan(
        _client_optimizer(c),
        steps=c.steps or c.epochs * max(1, per_pass),
        batch_size=c.batch_size,
        grad_accum=c.grad_accum,
        max_grad_norm=c.max_grad_norm,
        autocast=default_autocast() if c.autocast else None,
        gradient_checkpointing=c.gradient_checkpointing,
    )
    return LLMClient(
        model,
        blocks.train,
        held_out=blocks.held_out,
        training=plan,
        train_labels=blocks.train_labels,
        held_out_labels=blocks.held_out_labels,
    )


def build_llm(cfg: C.ExperimentConfig) -> Simulation:
    """A language-model federation of sites (``[model] name = "causal_lm"``, token data):
    ONE base model in this process shared by every site's ``LLMClient``; the server's
    state is the adapter's travelling tensors."""
    from fedforge.data.site_data import SiteDataError
    from fedforge.llm.adapters import adapter_params
    from fedforge.llm.federation import AdapterFolder, TokenData, samples_plugin

    data = cfg.data
    model, tokenizer = cfg.model.load()  # type: ignore[attr-defined]
    prep: dict[str, Any] | None = None
    central = None
    if isinstance(data, TokenData):  # sites' own files
        tables, prep = site_tables(cfg)
        try:
            blocks = {sid: data.blocks(t, tokenizer, cfg.seed, sid) for sid, t in tables.items()}
        except SiteDataError as exc:
            raise C.ConfigError(str(exc)) from None
    else:  # a built-in source: the server holds the union of the held-out parts
        from fedforge.llm.client import adapter_evaluator

        blocks = data.role_blocks(tokenizer, cfg.seed)  # type: ignore[attr-defined]
        held = [b.held_out_labels for b in blocks.values()]
        central = adapter_evaluator(
            model,
            torch.cat([b.held_out for b in blocks.values()]),
            batch_size=4,
            labels=None
            if all(h is None for h in held)
            else torch.cat([h for h in held if h is not None]),
        )
    clients = {sid: llm_client(cfg.client, model, b) for sid, b in blocks.items()}
    fd = D.FederatedData(
        {
            sid: D.ClientData(TensorDataset(b.train), TensorDataset(b.held_out))
            for sid, b in blocks.items()
        },
        None,
        None,
        (int(getattr(data, "seq_len", 0)),),
    )
    task = evaluation_task(cfg.evaluation, None)
    server = build_server(
        cfg, fd, model, task, clients, initial=adapter_params(model), central=central
    )
    server.plugins.append(AdapterFolder(model))  # each checkpoint holds a PEFT folder
    samples = samples_plugin(cfg.evaluation, model, tokenizer, data)
    if samples is not None:
        server.plugins.append(samples)
    return Simulation(cfg, fd, model, task, clients, server, make_backend(cfg.backend), prep)


def build(cfg: C.ExperimentConfig) -> Simulation:
    if is_llm(cfg):
        return build_llm(cfg)
    torch.manual_seed(cfg.seed)  # model initialisation only; training randomness is derived
    prep = None
    if cfg.site_data:
        fd, prep = site_federation(cfg)
    else:
        fd = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, fd)
    task = evaluation_task(cfg.evaluation, fd.num_classes)
    clients = {cid: torch_client(cfg.client, model, cd, task) for cid, cd in fd.clients.items()}
    backend = make_backend(cfg.backend)
    server = build_server(cfg, fd, model, task, clients)
    return Simulation(cfg, fd, model, task, clients, server, backend, prep)


def build_server(
    cfg: C.ExperimentConfig,
    fd: D.FederatedData,
    model: nn.Module,
    task: Task,
    clients: Mapping[ClientId, Client],
    *,
    population: Collection[ClientId] | None = None,
    secagg_channel: Channel | None = None,
    initial: Params | None = None,
    central: Callable[[Params], Any] | None = None,
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
    if cfg.site_data:  # each site holds out data.eval_fraction of its rows
        every_site_evaluates = getattr(cfg.data, "eval_fraction", 0) > 0
    else:
        every_site_evaluates = all(cd.test is not None for cd in fd.clients.values())
    fed = None
    if s.federated_eval_clients is None and cfg.site_data and every_site_evaluates:
        fed = Sampler(per_round=len(clients), seed=cfg.seed + 1)  # no server-held test set
    if s.federated_eval_clients is not None:
        if not every_site_evaluates:
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
            initial if initial is not None else from_module(model),
            sampler=sampler,
            aggregator=agg,
            plugins=plugins,
            update_bound=NormBound(s.update_norm_bound) if s.update_norm_bound else None,
            optimizer=server_optimizer(s.optimizer),
            central_eval=(
                central
                if central is not None and s.central_eval
                else central_evaluator(model, fd.test, task)
                if s.central_eval and fd.test is not None
                else None
            ),
            eval_plan=EvalPlan(
                every=s.eval_every,
                federated=fed,
                before=s.eval_before if s.eval_before is not None else is_llm(cfg),
            ),
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
