"""The configuration schema: one pydantic model per section, each forbidding unknown keys.

Each choice (data source, partition, model, transform, aggregator, server optimizer,
algorithm) is one of the components declared in ``fedforge.components``, chosen by its
tag, with only its own fields: the declarations are imported here (which registers them)
and the sections accept whatever is registered (``OneOf``). A kind registered after this
module is imported is accepted once ``refresh`` rebuilt the sections (``validate`` does).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the modules that declare components: importing them registers every built-in kind
import fedforge.aggregate
import fedforge.algorithms
import fedforge.data.images
import fedforge.data.sources
import fedforge.data.table
import fedforge.llm.federation
import fedforge.models
import fedforge.optim
import fedforge.transforms  # noqa: F401
from fedforge import components
from fedforge.client.metrics import METRICS
from fedforge.client.metrics import names as metric_names
from fedforge.components import Declaration, OneOf


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default(family: components.Family, kind: str) -> Any:
    return Field(default_factory=lambda: components.get(family, kind)())


DataConfig = Annotated[Declaration, OneOf("dataset")]
ModelConfig = Annotated[Declaration, OneOf("model")]
TransformConfig = Annotated[Declaration, OneOf("transform")]
AggregatorConfig = Annotated[Declaration, OneOf("aggregator")]
ServerOptConfig = Annotated[Declaration, OneOf("server_optimizer")]


class CompressionConfig(_Strict):
    """``[[compression.uplink]]`` tables in encode order; ``downlink`` the same for the broadcast."""

    uplink: list[TransformConfig] = []
    downlink: list[TransformConfig] | None = None  # None: float32 model to every participant
    downlink_keep: int = Field(8, ge=0)


# --- client and server --------------------------------------------------------------------


class ClientConfig(_Strict):
    """A participant's local training. ``steps`` optimizer steps (None: ``epochs`` passes);
    ``grad_accum`` micro-batches per step, ``max_grad_norm`` clipping, ``autocast`` bf16
    where a GPU supports it and ``gradient_checkpointing`` apply to language models."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, allow_inf_nan=False)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    prox_mu: float = Field(0.0, ge=0)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(None, gt=0, allow_inf_nan=False)
    autocast: bool = False
    gradient_checkpointing: bool = False


class ServerConfig(_Strict):
    # the round's hooks (fedforge.algorithms): plain averaging (FedAvg; FedProx with
    # client.prox_mu), SCAFFOLD (control variates; needs local SGD without momentum) or
    # FedNova (normalized averaging for unequal local step counts)
    algorithm: str = "fedavg"  # a kind of components.kinds("algorithm", in_config=True)
    rounds: int = Field(20, ge=1)
    clients_per_round: int | None = Field(10, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    over_select: float = Field(1.0, ge=1.0, allow_inf_nan=False)
    aggregator: AggregatorConfig = _default("aggregator", "weighted_mean")
    update_norm_bound: float | None = Field(None, gt=0, allow_inf_nan=False)
    optimizer: ServerOptConfig = _default("server_optimizer", "fedavg")
    eval_every: int = Field(1, ge=1)
    # evaluate the starting model too, as round 0 (None: for language models only)
    eval_before: bool | None = None
    central_eval: bool = True
    federated_eval_clients: int | None = Field(None, ge=1)

    @field_validator("aggregator", mode="before")
    @classmethod
    def _aggregator_by_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # aggregator = "median" is enough

    @field_validator("algorithm")
    @classmethod
    def _algorithm_declared(cls, v: str) -> str:
        allowed = components.kinds("algorithm", in_config=True)
        if v not in allowed:
            raise ValueError(f"unknown algorithm {v!r}; allowed: {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _one_sampling_rule(self) -> ServerConfig:
        if self.fraction is not None and "clients_per_round" not in self.model_fields_set:
            return self.model_copy(update={"clients_per_round": None})
        if self.fraction is not None and self.clients_per_round is not None:
            raise ValueError("set either clients_per_round or fraction, not both")
        if self.fraction is None and self.clients_per_round is None:
            raise ValueError("set clients_per_round or fraction")
        return self


class BackendConfig(_Strict):
    """Where participants run. ``sequential``: one at a time in this process;
    ``processes``: a pool of ``workers`` forked processes; ``vectorized``: groups of up to
    ``clients_per_batch`` participants trained as one ``torch.func`` program (models it
    cannot vectorize fall back to one at a time, with a message); ``ray``: Ray actors on a
    local Ray (``num_cpus``) or the cluster at ``address`` (needs ``fedforge[ray]``).
    ``threads``: torch intra-op threads per participant run (per worker / actor)."""

    kind: Literal["sequential", "processes", "vectorized", "ray"] = "sequential"
    workers: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    clients_per_batch: int = Field(256, ge=1)
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fits_kind(self) -> BackendConfig:
        only = {
            "workers": ("processes", "ray"),
            "clients_per_batch": ("vectorized",),
            "address": ("ray",),
            "num_cpus": ("ray",),
        }
        for key, kinds in only.items():
            # Compared with the default, not model_fields_set: a dumped config (run dir,
            # --resume) spells out every key with its default.
            default = type(self).model_fields[key].default
            if getattr(self, key) != default and self.kind not in kinds:
                raise ValueError(
                    f"backend.{key} applies to kind {' or '.join(kinds)}, not {self.kind!r}"
                )
        return self


class AdaptiveClipConfig(_Strict):
    """Adaptive clipping (Andrew et al. 2021): the bound follows the ``target_quantile`` of
    update norms, learned at ``learning_rate`` from a noised count (``count_noise``; None:
    expected participants / 20)."""

    initial: float = Field(0.1, gt=0, allow_inf_nan=False)
    target_quantile: float = Field(0.5, gt=0, lt=1)
    learning_rate: float = Field(0.2, gt=0, allow_inf_nan=False)
    count_noise: float | None = Field(None, gt=0, allow_inf_nan=False)


class PrivacyConfig(_Strict):
    """Central DP-FedAvg (McMahan et al. 2018) with its accountant: each update clipped to
    L2 norm ``clip`` (or ``adaptive_clip``), Gaussian noise of ``noise_multiplier`` x clip
    on the sum, divided by the participants per round; epsilon at ``delta`` is recorded
    after every round (RDP over fixed-size sampling, what the server's sampler does), and
    with ``budget`` the run stops before the round that would spend more epsilon."""

    noise_multiplier: float = Field(ge=0, allow_inf_nan=False)
    clip: float | None = Field(None, gt=0, allow_inf_nan=False)
    adaptive_clip: AdaptiveClipConfig | None = None
    delta: float = Field(1e-5, gt=0, lt=1)
    budget: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_clip(self) -> PrivacyConfig:
        if (self.clip is None) == (self.adaptive_clip is None):
            raise ValueError(
                "set exactly one of privacy.clip (a fixed bound) or [privacy.adaptive_clip]"
            )
        return self


class SecAggSection(_Strict):
    """Secure aggregation (SecAgg+, Bell et al. 2020): participants mask their updates so
    the server learns only the round's sum. ``graph``: who shares masks with whom
    (``complete``, ``sparse`` with ``neighbours`` (None: chosen for the round size) or
    ``auto``: complete up to 64 participants); ``threshold``: shares that rebuild a secret
    (None: the smallest safe one); ``clip`` bounds each coordinate of an update and
    ``max_weight`` a participant's weight, which fixes the fixed-point scale in ``bits``;
    ``clip_norm`` clips each update's L2 norm on the participant and ``noise_std`` adds
    Gaussian noise there (distributed DP); ``stage_timeout``: seconds a protocol stage
    waits for answers over gRPC before the silent ones count as dropouts."""

    graph: Literal["auto", "complete", "sparse"] = "auto"
    neighbours: int | None = Field(None, ge=2)
    threshold: int | None = Field(None, ge=1)
    clip: float = Field(100.0, gt=0, allow_inf_nan=False)
    max_weight: float = Field(1e6, ge=1, allow_inf_nan=False)
    bits: Literal[32, 64] = 64
    clip_norm: float | None = Field(None, gt=0, allow_inf_nan=False)
    noise_std: float = Field(0.0, ge=0, allow_inf_nan=False)
    stage_timeout: float = Field(60.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _neighbours_for_sparse(self) -> SecAggSection:
        if self.neighbours is not None and self.graph == "complete":
            raise ValueError("secagg.neighbours applies to graph sparse or auto, not complete")
        return self


class FederationSection(_Strict):
    """Who takes part when sites bring their own data (``[data]`` of a site kind such as
    ``table``): ``sites`` are site config files (``fedforge.config.site``; relative to this
    config), each participant reading only its own file, for ``fedforge simulate``;
    ``participants`` are the ids a deployed ``fedforge server`` lets join (default: the ids
    of ``sites``; each needs a certificate from ``fedforge certs --ids``)."""

    sites: list[str] = []
    participants: list[str] = []

    @field_validator("participants")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        from fedforge.params import check_id

        for cid in v:
            check_id(cid)
        if len(set(v)) != len(v):
            raise ValueError("federation.participants lists an id twice")
        return v


class EvaluationConfig(_Strict):
    """``[evaluation]``: the metrics every evaluation, central and federated, reports
    (``fedforge.client.metrics``; None: the task's own, accuracy or for a regression mse),
    and ``confusion_matrix``: report the confusion matrix too and keep the latest in the
    run directory (``confusion_matrix.json`` and ``.png``)."""

    metrics: list[str] | None = Field(None, min_length=1)
    confusion_matrix: bool = False
    # language models: what the global model answers to each prompt after every round
    # (samples.md in the run directory); greedy with a repetition penalty, or seeded
    # sampling at temperature > 0
    prompts: list[str] = []
    max_new_tokens: int = Field(48, ge=1, le=2048)
    repetition_penalty: float = Field(1.3, ge=1.0, allow_inf_nan=False)
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("metrics")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        allowed = [n for n in METRICS if n != "confusion_matrix"]
        for name in v:
            if name == "confusion_matrix":
                raise ValueError(
                    "'confusion_matrix' is a table, not a value: set evaluation.confusion_matrix = true"
                )
            if name not in allowed:
                raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(allowed)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a metric is named twice: {v}")
        if len({METRICS[n].kind for n in v}) > 1:
            raise ValueError(
                f"{v} mixes classification and regression metrics (a regression's: "
                f"{', '.join(metric_names('regression'))})"
            )
        return v


class RunConfig(_Strict):
    dir: str = "runs"
    checkpoint_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)


class ExperimentConfig(_Strict):
    name: str = "fashion-mnist-cnn"
    seed: int = 0
    data: DataConfig = _default("dataset", "fashion_mnist")
    model: ModelConfig = _default("model", "cnn")
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    backend: BackendConfig = BackendConfig()
    run: RunConfig = RunConfig()
    compression: CompressionConfig = CompressionConfig()
    privacy: PrivacyConfig | None = None  # None: no differential privacy
    secagg: SecAggSection | None = None  # None: the server sees each update
    federation: FederationSection = FederationSection()

    @property
    def site_data(self) -> bool:
        """Whether each site brings its own rows (``[data]`` of a site kind)."""
        return bool(getattr(self.data, "site_data", False))

    @model_validator(mode="after")
    def _model_fits_data(self) -> ExperimentConfig:
        lm = getattr(self.model, "name", None) == "causal_lm"
        tokens = bool(getattr(self.data, "token_data", False))
        if lm != tokens:
            raise ValueError(
                "model.name = 'causal_lm' trains on token data ([data] dataset = 'instructions', "
                "'lm_text' or 'shakespeare_roles') and token data needs it"
            )
        return self

    @model_validator(mode="after")
    def _sites_fit_data(self) -> ExperimentConfig:
        f = self.federation
        if self.site_data and not (f.sites or f.participants):
            raise ValueError(
                f"data.dataset = {getattr(self.data, 'dataset', '')!r}: each site brings its own "
                "file; list the site configs in [federation] sites (fedforge simulate) or the "
                "participant ids in [federation] participants (fedforge server)"
            )
        s = self.server
        if self.site_data and "clients_per_round" not in s.model_fields_set and s.fraction is None:
            # a federation of named sites asks every site each round unless told otherwise
            every = len(f.participants or f.sites)
            object.__setattr__(self, "server", s.model_copy(update={"clients_per_round": every}))
        if not self.site_data and (f.sites or f.participants):
            raise ValueError(
                "[federation] sites/participants apply to a [data] section that sites bring "
                "(dataset = 'table' or 'text'); a built-in dataset is split by its partition"
            )
        return self

    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _algorithm_composes(self) -> ExperimentConfig:
        a, c = self.server.algorithm, self.client
        if a == "fedavg":
            return self
        if c.optimizer != "sgd":
            raise ValueError(
                f"server.algorithm: {a!r} needs client.optimizer = 'sgd' (its math is local "
                f"SGD's), got {c.optimizer!r}"
            )
        if a == "scaffold" and c.momentum:
            raise ValueError(
                "server.algorithm: 'scaffold' needs client.momentum = 0 (its control variates "
                "assume plain local SGD steps)"
            )
        if self.secagg is not None or self.privacy is not None:
            raise ValueError(
                f"server.algorithm: {a!r} cannot be combined with [secagg] or [privacy] yet: "
                "both fold only the model's update, not the algorithm's extras"
            )
        return self

    @model_validator(mode="after")
    def _secagg_composes(self) -> ExperimentConfig:
        if self.secagg is None:
            return self
        if self.site_data and not getattr(self.data, "token_data", False):  # token data: counts
            raise ValueError(
                "[secagg] cannot be combined with sites that bring their own data yet: the "
                "federation's preprocessing adds up each site's sums and counts before round 1, "
                "and the server would see every site's sums, which secure aggregation exists to "
                "hide (secure aggregation of the preprocessing step is not built yet)"
            )
        if self.privacy is not None:
            raise ValueError(
                "[privacy] cannot be combined with [secagg]: DP-FedAvg clips each update on "
                "the server, which never sees one under secure aggregation; clip and noise "
                "on the participants instead with secagg.clip_norm and secagg.noise_std"
            )
        if self.server.update_norm_bound is not None:
            raise ValueError(
                "server.update_norm_bound cannot be combined with [secagg]: the server never "
                "holds an update to measure; use secagg.clip_norm"
            )
        return self


_SECTIONS: tuple[type[BaseModel], ...] = (CompressionConfig, ServerConfig, ExperimentConfig)
_built = components.version()


def refresh() -> None:
    """Rebuild the sections if a kind was registered since they were built."""
    global _built
    if _built != components.version():
        components.rebuild(*_SECTIONS)
        _built = components.version()


__all__ = [
    "DataConfig",
    "ModelConfig",
    "TransformConfig",
    "CompressionConfig",
    "ClientConfig",
    "ServerOptConfig",
    "AggregatorConfig",
    "ServerConfig",
    "BackendConfig",
    "AdaptiveClipConfig",
    "PrivacyConfig",
    "SecAggSection",
    "EvaluationConfig",
    "RunConfig",
    "FederationSection",
    "ExperimentConfig",
    "refresh",
]
