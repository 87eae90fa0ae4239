"""Sample-level DP inside a participant: DP-SGD (Abadi et al. 2016) with Opacus.

``DPSGDClient`` trains like ``TorchClient`` but every local step is a
DP-SGD step: a Poisson-sampled batch (each local example taken independently
with probability q = batch_size / n), per-example gradients from Opacus'
``GradSampleModule``, each clipped to ``max_grad_norm``, summed, plus
N(0, (sigma * max_grad_norm)^2), divided by the expected batch size (Opacus'
``DPOptimizer``). It protects each *example* of the participant's data, also
from the server; participant-level DP (``DPFedAvg``) protects a participant's
whole dataset. With a handful of data holders (five hospitals) sample-level DP
is usually the meaningful one.

Shared module: many virtual clients may share one ``nn.Module``. Each ``fit``
wraps the shared module in a *fresh* ``GradSampleModule`` and closes it in a
``finally`` (removing Opacus' hooks and ``grad_sample`` attributes), so
nothing leaks into the next client or into a plain ``TorchClient`` using the
same module; memory stays one model.

Each round emits ``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)``;
``SampleLevel`` hands the worst such event over a federation to the
accountant, assuming (conservatively) that every participant trains every
round. The noise comes from a participant secret, not from the round seed the
server knows (see ``noise.participant_generator``).
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dp_accounting as dpa
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from fedforge.client.batches import dataset_len
from fedforge.client.local import LocalPlan, OptimizerFactory, sgd, train
from fedforge.client.tasks import Task
from fedforge.client.torch_client import evaluate_model
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.params import Params, load_into, sub
from fedforge.privacy._checks import check_clip, check_noise_multiplier, check_positive_int
from fedforge.privacy.accounting import Relation
from fedforge.seeding import derive_seed

if TYPE_CHECKING:
    from fedforge.plugins import ServerView


@dataclass(frozen=True)
class DpSgd:
    noise_multiplier: float  # sigma
    max_grad_norm: float  # per-example clip bound
    batch_size: int  # expected (Poisson) batch size
    steps: int  # local DP-SGD steps per round

    def __post_init__(self) -> None:
        check_noise_multiplier(self.noise_multiplier)
        check_clip(self.max_grad_norm, "max_grad_norm")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.steps, "steps")

    def sample_rate(self, num_examples: int) -> float:
        return min(1.0, self.batch_size / num_examples)

    def round_event(self, num_examples: int) -> dpa.DpEvent:
        step = dpa.PoissonSampledDpEvent(
            self.sample_rate(num_examples), dpa.GaussianDpEvent(self.noise_multiplier)
        )
        return dpa.SelfComposedDpEvent(step, self.steps)


def check_opacus_supports(model: nn.Module) -> None:
    """Raise ``ValueError`` listing the layers Opacus cannot give per-example gradients for."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(
            "DP-SGD needs per-example gradients, which Opacus cannot compute for this model: "
            + "; ".join(str(e) for e in errors)
            + " (e.g. replace BatchNorm by GroupNorm: opacus.validators.ModuleValidator.fix)"
        )


def _take(ds: Dataset[Any], idx: Tensor) -> tuple[Tensor, ...]:
    if isinstance(ds, TensorDataset):
        return tuple(t[idx] for t in ds.tensors)
    return tuple(default_collate([ds[i] for i in idx.tolist()]))


class DPSGDClient:
    """A participant that trains with DP-SGD; same ``fit``/``evaluate`` seam as TorchClient."""

    def __init__(
        self,
        model: nn.Module,
        train: Dataset[Any],
        task: Task,
        dp: DpSgd,
        *,
        test: Dataset[Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        seed: int | None = None,
    ) -> None:
        if dataset_len(train) == 0:
            raise ValueError("a client needs at least one training example; its dataset is empty")
        check_opacus_supports(model)
        self.model = model
        self.train = train
        self.test = test
        self.task = task
        self.dp = dp
        self.optimizer = optimizer or sgd(0.05)
        # secret noise seed: None draws one from the OS (not reproducible run to run)
        self.secret = seed if seed is not None else secrets.randbits(63)

    @property
    def num_examples(self) -> int:
        return dataset_len(self.train)

    def round_event(self) -> dpa.DpEvent:
        return self.dp.round_event(self.num_examples)

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        """DP-SGD steps through the one local loop (``fedforge.client.local.train``): its
        optimizer is Opacus' ``DPOptimizer`` around this client's, its batches are
        Poisson-sampled, and an empty batch still takes a (noise-only) step."""
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        model, n, dp = self.model, self.num_examples, self.dp
        load_into(model, params)
        q = dp.sample_rate(n)
        batches = torch.Generator().manual_seed(info.seed)
        noise = torch.Generator().manual_seed(derive_seed(self.secret, "dp-sgd", info.round))
        gsm = GradSampleModule(model)  # hooks on the shared module; removed in `finally`
        trainable = [p for p in model.parameters() if p.requires_grad]

        def private(ps: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
            return DPOptimizer(
                self.optimizer(ps),
                noise_multiplier=dp.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                expected_batch_size=dp.batch_size,
                generator=noise,
            )

        def poisson() -> Iterator[tuple[Tensor]]:
            for _ in range(dp.steps):
                yield ((torch.rand(n, generator=batches) < q).nonzero().squeeze(1),)

        def loss_of(idx: Tensor) -> Tensor | None:
            if len(idx) == 0:  # Opacus needs (empty) per-example gradients to add noise to
                for p in trainable:
                    setattr(p, "grad_sample", torch.zeros((0, *p.shape), dtype=p.dtype))  # noqa: B010
                return None
            x, y = _take(self.train, idx)
            return self.task.loss(gsm(x), y)

        plan = LocalPlan(private, steps=dp.steps, batch_size=dp.batch_size)
        try:
            with warnings.catch_warnings():
                # Opacus' hooks on a first layer whose input needs no gradient: harmless
                warnings.filterwarnings("ignore", "Full backward hook is firing")
                done = train(model, plan, poisson(), loss_of, info.seed)
        finally:
            gsm._close()  # drop hooks and grad_sample attributes from the shared module
            for p in model.parameters():
                p.grad = None
        new = {k: v.detach() for k, v in model.state_dict().items() if k in params}
        metrics = {"train_loss": done.loss, "local_steps": float(done.steps)}
        return FitResult(sub(new, params), n, metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        if self.test is None or dataset_len(self.test) == 0:
            raise ValueError("this client has no evaluation split")
        load_into(self.model, params)
        return evaluate_model(self.model, self.test, self.task)


@dataclass(frozen=True)
class SampleLevel:
    """Event source for DP-SGD participants: the worst participant's round event.

    A round of DP-SGD costs more privacy with a higher sample rate, more steps
    and less noise, so the worst case over participants is the one with the
    largest q, the most steps and the smallest sigma (possibly not a single
    participant: an upper bound for all of them).
    """

    clients: Sequence[DPSGDClient]

    def __post_init__(self) -> None:
        if not self.clients:
            raise ValueError("SampleLevel needs at least one DPSGDClient")

    @staticmethod
    def of(clients: Iterable[Any]) -> SampleLevel:
        found = [c for c in clients if isinstance(c, DPSGDClient)]
        return SampleLevel(tuple(found))

    @property
    def population(self) -> int | None:
        return min(c.num_examples for c in self.clients)

    @property
    def relation(self) -> Relation:
        return Relation.ADD_OR_REMOVE_ONE

    def planned_event(self) -> dpa.DpEvent:
        sigma = min(c.dp.noise_multiplier for c in self.clients)
        steps = max(c.dp.steps for c in self.clients)
        q = max(c.dp.sample_rate(c.num_examples) for c in self.clients)
        return dpa.SelfComposedDpEvent(
            dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps
        )

    def spent_event(self) -> dpa.DpEvent:
        return self.planned_event()

    def check(self, server: ServerView) -> None:
        return None
