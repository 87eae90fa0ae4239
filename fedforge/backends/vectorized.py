"""The vectorized backend: many ``TorchClient``s trained at once as one tensor program.

Simulating thousands of participants one after another spends most of its time in
Python and in tiny kernels: a client with 60 examples runs two mini-batches of a
7,850-parameter model. Here a group of participants that share one ``nn.Module`` is
trained together: the global parameters are stacked once per participant, and each
local SGD step is a single ``torch.func.vmap(torch.func.grad(...))`` over the stack,
so one round of 10,000 participants is a few hundred large kernels instead of tens of
thousands of small ones.

The math is TorchClient's, replayed exactly:

* the same batches: each participant's shuffling comes from
  ``torch.Generator().manual_seed(info.seed)`` and one ``torch.randperm(n)`` per epoch,
  cut into batches of ``batch_size`` (the last one partial), or ``steps`` batches that
  roll over into new epochs (``iterate_batches`` / ``iterate_steps``);
* the same loss: the task's loss per example, each example weighted by
  ``1 / (true size of its batch)``, so a padded batch contributes exactly the batch
  mean; padding rows (a copy of the participant's own first example) weigh 0;
* the same optimizer: ``torch.optim.SGD``'s update (lr, momentum, dampening, Nesterov,
  weight decay, maximize), FedProx's ``mu/2 * ||w - w_global||^2``;
* the same answer: ``FitResult(new - old, len(train), {"train_loss", "local_steps"})``.

Participants with fewer steps than others in their group simply stop: the group is
sorted by step count, so at step ``t`` the still-active participants are a prefix of
the stack and only that prefix is computed and updated (a finished participant's
parameters and momentum are not touched again).

Whatever cannot be replayed this way runs on the sequential path, participant by
participant, with one log message per reason: participants that are not plain
``TorchClient``s, datasets that are not ``(inputs, targets)`` ``TensorDataset``s,
optimizers other than ``torch.optim.SGD``, models with buffers (BatchNorm running
statistics), dropout or layers ``torch.func`` cannot batch, models whose outputs for
one example depend on the other examples of the batch, losses that are not a mean
over examples. Results are yielded in job order, so the server's streaming aggregate
sums in the same order as on every other backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils.data import TensorDataset

from fedforge.backends.schedule import client_schedule, schedule, step_count
from fedforge.backends.vmap_sgd import (
    _CLASS_INDEX_LOSSES,
    _ELEMENTWISE_LOSSES,
    RowBlock,
    _arena,
    _deltas,
    _gather,
    _Hyper,
    _make_step,
    _ModelGroup,
    _per_example_loss,
    _row_block,
    _row_buffer,
    _Scratch,
    _sgd_step,
)
from fedforge.client.local import LocalPlan
from fedforge.client.torch_client import TorchClient
from fedforge.client.types import Client, ClientFailure, EvalResult, FitResult, RoundInfo, describe
from fedforge.params import ClientId, Params
from fedforge.participant import Stack
from fedforge.server.backend import FitBatch, FitOutcome, Job

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class _Plan:
    """How one participant trains, read from its ``TorchClient`` at ``start`` (and again if
    its settings changed since: ``signature`` is compared before every round)."""

    client: TorchClient
    x: Tensor
    y: Tensor
    hyper: _Hyper
    n: int
    signature: tuple[object, ...]
    x_block: RowBlock | None  # where x and y sit in their storages (the one-gather path)
    y_block: RowBlock | None


def _signature(client: TorchClient) -> tuple[object, ...]:
    """What a plan was read from; any change (a new dataset, optimizer, batch size...)
    makes the backend read the participant again."""
    ds = client.train
    tensors = tuple(map(id, ds.tensors)) if isinstance(ds, TensorDataset) else ()
    # the plan is frozen: a changed plan is a new object, so its identity is enough (and
    # this runs for every participant of every round)
    return (id(client.model), id(ds), tensors, id(client.task.loss), id(client.plan))


def batchable(plan: LocalPlan) -> str | None:
    """Why a participant's ``LocalPlan`` cannot be trained as one vectorized program
    (None: it can). The program replays plain SGD steps of one batch each."""
    unsupported = {
        "grad_accum": plan.grad_accum != 1,
        "max_grad_norm": plan.max_grad_norm is not None,
        "autocast": plan.autocast is not None,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "keep_optimizer_state": plan.keep_optimizer_state,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        return f"their local plan sets {', '.join(bad)}, which the vectorized step does not replay"
    return None


def _sgd_hyper(client: TorchClient, model: nn.Module) -> _Hyper | str:
    """The SGD settings the client's optimizer factory builds, or why they cannot be replayed."""
    why = batchable(client.plan)
    if why is not None:
        return why
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = client.plan.optimizer(iter(trainable))
    except Exception as exc:
        return f"its optimizer factory failed on the model's parameters ({describe(exc)})"
    if type(opt) is not torch.optim.SGD:
        return f"its optimizer is {type(opt).__name__}; only torch.optim.SGD is vectorized"
    if len(opt.param_groups) != 1:
        return f"its optimizer has {len(opt.param_groups)} parameter groups; only one is vectorized"
    g = opt.param_groups[0]
    if {id(p) for p in g["params"]} != {id(p) for p in trainable}:
        return "its optimizer does not train exactly the model's trainable parameters"
    return _Hyper(
        lr=float(g["lr"]),
        momentum=float(g["momentum"]),
        dampening=float(g["dampening"]),
        weight_decay=float(g["weight_decay"]),
        nesterov=bool(g["nesterov"]),
        maximize=bool(g.get("maximize", False)),
        prox_mu=float(client.plan.prox_mu),
    )


def _model_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained through ``torch.func`` with TorchClient's exact
    results, judged from its structure alone (None: try it)."""
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        return (
            f"the model has buffers ({', '.join(buffers[:3])}), e.g. BatchNorm running "
            "statistics, which training updates in place"
        )
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            return (
                f"the model uses dropout ({name or 'root'}: {type(mod).__name__}(p={mod.p})), "
                "whose random masks come from the global RNG in TorchClient"
            )
    names = {n for n, _ in model.named_parameters()}
    extra = [k for k in model.state_dict() if k not in names]
    if extra:
        return f"the model has tied or non-parameter tensors ({', '.join(extra[:3])})"
    return None


class Vectorized:
    """Train groups of ``TorchClient``s sharing one model in one ``vmap``; fall back to
    one-at-a-time for everything else.

    ``clients_per_batch`` bounds how many participants are stacked at once (memory grows
    with it: about four copies of the model per participant, plus one batch of
    activations each); ``state_budget_bytes`` lowers it further for large models so that
    the stacked parameters, gradients and momentum stay under that many bytes.
    """

    name = "vectorized"

    def __init__(
        self,
        clients_per_batch: int = 256,
        *,
        state_budget_bytes: int = 1 << 30,
        threads: int | None = None,
    ) -> None:
        if not isinstance(clients_per_batch, int) or clients_per_batch <= 0:
            raise ValueError(
                f"clients_per_batch must be a positive integer (participants trained together "
                f"in one vectorized batch), got {clients_per_batch!r}"
            )
        if state_budget_bytes <= 0:
            raise ValueError(f"state_budget_bytes must be > 0, got {state_budget_bytes}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.clients_per_batch = clients_per_batch
        self.state_budget_bytes = state_budget_bytes
        self.threads = threads
        self._clients: Mapping[ClientId, Client] = {}
        self._plans: dict[ClientId, _Plan] = {}
        self._groups: dict[int, _ModelGroup] = {}
        self._said: set[str] = set()
        self._scratch = _Scratch()

    # --- set-up ----------------------------------------------------------------------------

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        """Decide once, per participant, whether it can be vectorized; say why not."""
        self._clients = clients
        self._plans = {}
        self._groups = {}
        refused: dict[str, list[ClientId]] = {}
        for cid, client in clients.items():
            plan = self._plan(client)
            if isinstance(plan, str):
                refused.setdefault(plan, []).append(cid)
            else:
                self._plans[cid] = plan
        for group in self._groups.values():
            members = [c for c, p in self._plans.items() if p.client.model is group.model]
            if not members:
                continue
            reason = self._probe(group, [self._plans[c] for c in members[:8]])
            if reason is not None:
                group.unsupported = reason
                for c in members:
                    del self._plans[c]
                refused.setdefault(reason, []).extend(members)
        for reason, cids in refused.items():
            self._say(
                f"vectorized backend: {len(cids)} of {len(clients)} participants "
                f"({_names(cids)}) run sequentially: {reason}"
            )
        log.info(
            "vectorized backend: %d of %d participants vectorized in %d model group(s)",
            len(self._plans),
            len(clients),
            sum(g.unsupported is None for g in self._groups.values()),
        )

    def _plan(self, client: Client) -> _Plan | str:
        if isinstance(client, Stack):  # batched only where the stack is ``fit`` alone
            if not client.plan.identity:
                return "their stacks encode each update after fit (uplink transforms)"
            client = client.client
        if type(client) is not TorchClient:
            return f"they are {type(client).__name__}, not TorchClient"
        ds = client.train
        if not isinstance(ds, TensorDataset) or len(ds.tensors) != 2:
            return "their training data is not an (inputs, targets) TensorDataset"
        model = client.model
        group = self._groups.get(id(model))
        if group is None:
            reason = _model_reason(model)
            params = dict(model.named_parameters())
            first = next(iter(params.values()), None)
            group = _ModelGroup(
                model=model,
                trainable=tuple(k for k, p in params.items() if p.requires_grad),
                frozen=tuple(k for k, p in params.items() if not p.requires_grad),
                dtypes={k: p.dtype for k, p in params.items()},
                dtype=first.dtype if first is not None else torch.float32,
                device=first.device if first is not None else torch.device("cpu"),
                unsupported=reason
                or (None if first is not None else "the model has no parameters"),
            )
            self._groups[id(model)] = group
        if group.unsupported is not None:
            return group.unsupported
        if group.loss_fn is None:
            group.loss_fn = client.task.loss
            group.per_example = _per_example_loss(client.task.loss)
        elif client.task.loss is not group.loss_fn:
            return "they share a model with participants that use a different loss"
        x, y = ds.tensors
        if client.task.loss in _CLASS_INDEX_LOSSES and y.numel() and int(y.min()) < 0:
            return "their targets hold negative (ignored) class indices"
        hyper = _sgd_hyper(client, model)
        if isinstance(hyper, str):
            return hyper
        x, y = x.to(group.device), y.to(group.device)
        return _Plan(
            client, x, y, hyper, int(x.shape[0]), _signature(client), _row_block(x), _row_block(y)
        )

    def _probe(self, group: _ModelGroup, plans: Sequence[_Plan]) -> str | None:
        """Run the model through ``torch.func`` on a few real examples and check what the
        vectorized step relies on: batched forward equals the module's own forward, one
        example's output does not depend on the others in its batch (padding is harmless),
        the loss is a mean of per-example terms, and every parameter gets a gradient."""
        model, per_example, loss_fn = group.model, group.per_example, group.loss_fn
        assert per_example is not None and loss_fn is not None
        x = torch.cat([p.x[:4] for p in plans])[:8]
        y = torch.cat([p.y[:4] for p in plans])[:8]
        params = {k: v.detach() for k, v in model.named_parameters()}
        was_training = model.training
        model.train()
        try:
            with torch.no_grad():
                ref = model(x)
                stacked = {k: v.unsqueeze(0).expand(2, *v.shape) for k, v in params.items()}
                batched = vmap(lambda p, xx: functional_call(model, p, (xx,)))(
                    stacked, x.unsqueeze(0).expand(2, *x.shape)
                )
                if not torch.allclose(batched[1], ref, rtol=1e-4, atol=1e-5):
                    return "torch.func's batched forward differs from the module's forward"
                padded = functional_call(model, params, (torch.cat([x, x.flip(0) * 3 + 1]),))
                if not torch.allclose(padded[: len(x)], ref, rtol=1e-4, atol=1e-5):
                    return "one example's output depends on the other examples in its batch"
                if loss_fn in _ELEMENTWISE_LOSSES and ref.shape != y.shape:
                    return (
                        f"the model's output shape {list(ref.shape)} differs from the targets' "
                        f"{list(y.shape)}, so the loss broadcasts across examples"
                    )
                whole = loss_fn(ref, y)
                split = per_example(ref, y)
                if split.shape != (len(x),) or not torch.allclose(
                    split.mean(), whole, rtol=1e-4, atol=1e-6
                ):
                    return f"the task's loss {_fn_name(loss_fn)} is not a mean over examples"
            with torch.enable_grad():
                live = [p for p in model.parameters() if p.requires_grad]
                grads = torch.autograd.grad(loss_fn(model(x), y), live, allow_unused=True)
            unused = [k for k, g in zip(group.trainable, grads, strict=True) if g is None]
            if unused:
                return (
                    f"parameters {unused[:3]} get no gradient (torch.optim.SGD skips them, "
                    "the vectorized step would not)"
                )
            hyper = plans[0].hyper
            weights = torch.full((2, len(x)), 1.0 / len(x), dtype=group.dtype)
            step = _make_step(group, hyper.prox_mu)
            stacked = {
                k: params[k].unsqueeze(0).repeat(2, *([1] * params[k].dim()))
                for k in group.trainable
            }
            frozen = {k: params[k] for k in group.frozen}
            anchors = {k: params[k] for k in group.trainable}
            xx, yy = torch.stack([x, x]), torch.stack([y, y])
            step(anchors, frozen, anchors, xx, yy, weights, shared=True)
            step(stacked, frozen, anchors, xx, yy, weights)
        except Exception as exc:
            return (
                "running the model through torch.func on a few of its examples failed: "
                f"{describe(exc)}"
            )
        finally:
            model.train(was_training)
        return None

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning("%s", message)

    # --- fit -------------------------------------------------------------------------------

    def fit(self, jobs: Sequence[Job], params: Params) -> Iterator[FitOutcome]:
        """Train the jobs in windows of ``clients_per_batch``: the window's vectorizable
        participants together (one program per model and optimizer setting), the rest one
        by one; yield the window's results in job order before starting the next, each run
        of consecutive jobs trained together as one ``FitBatch``."""
        before = torch.get_num_threads()
        i = 0
        while i < len(jobs):
            window = jobs[i : i + self.clients_per_batch]
            i += len(window)
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            try:
                done = self._fit_window(window, params)
            finally:
                torch.set_num_threads(before)
            j = 0
            while j < len(window):
                hit = done.get(j)
                if hit is None:
                    cid, info = window[j]
                    yield cid, self._sequential_fit(cid, params, info)
                    j += 1
                    continue
                batch, row = hit
                end = j + 1  # extend the run while the next job is the next row of the batch
                while end < len(window):
                    nxt = done.get(end)
                    if nxt is None or nxt[0] is not batch or nxt[1] != row + end - j:
                        break
                    end += 1
                whole = row == 0 and end - j == len(batch)
                yield batch if whole else batch.slice(row, row + end - j)
                j = end

    def _fit_window(self, window: Sequence[Job], params: Params) -> dict[int, tuple[FitBatch, int]]:
        """Where each vectorizable job's result is, keyed by position in the window: a batch
        and the row in it."""
        groups: dict[tuple[int, _Hyper], list[int]] = {}
        names = set(params)
        usable: dict[int, bool] = {}
        for j, (cid, _) in enumerate(window):
            plan = self._current_plan(cid)
            if plan is None:
                continue
            group = self._groups[id(plan.client.model)]
            ok = usable.get(id(group.model))
            if ok is None:
                ok = usable[id(group.model)] = group.unsupported is None and names == set(
                    group.trainable + group.frozen
                )
                if group.unsupported is None and not ok:
                    self._say(
                        "vectorized backend: the global parameters do not name exactly the "
                        "model's parameters; its participants run sequentially"
                    )
            if ok:
                groups.setdefault((id(group.model), plan.hyper), []).append(j)
        out: dict[int, tuple[FitBatch, int]] = {}
        for (model_id, hyper), members in groups.items():
            group = self._groups[model_id]
            cap = self._cap(group, params)
            for s in range(0, len(members), cap):
                chunk = members[s : s + cap]
                try:
                    batch = self._fit_group(group, hyper, [window[j] for j in chunk], params)
                except Exception as exc:  # e.g. out of memory: this chunk goes one by one
                    self._say(
                        f"vectorized backend: a batch of {len(chunk)} participants failed "
                        f"({describe(exc)}); running them sequentially"
                    )
                    continue
                out.update((j, (batch, row)) for row, j in enumerate(chunk))
        return out

    def _current_plan(self, cid: ClientId) -> _Plan | None:
        """The participant's plan, read again if its settings changed since ``start`` (e.g.
        an attack swapped its dataset); None if it runs sequentially."""
        plan = self._plans.get(cid)
        if plan is None or plan.signature == _signature(plan.client):
            return plan
        fresh = self._plan(plan.client)
        if isinstance(fresh, str):
            del self._plans[cid]
            self._say(f"vectorized backend: participant {cid} now runs sequentially: {fresh}")
            return None
        self._plans[cid] = fresh
        return fresh

    def _cap(self, group: _ModelGroup, params: Params) -> int:
        per_client = sum(params[k].numel() for k in group.trainable) * group.dtype.itemsize * 4
        return max(1, min(self.clients_per_batch, self.state_budget_bytes // max(per_client, 1)))

    def _fit_group(
        self, group: _ModelGroup, hyper: _Hyper, jobs: Sequence[Job], params: Params
    ) -> FitBatch:
        """Run local SGD for ``jobs`` (participants of one model and one SGD setting) at
        once; returns their results as one batch, rows in the order of ``jobs``."""
        plans = [self._plans[cid] for cid, _ in jobs]
        steps = np.array([step_count(p.client, p.n) for p in plans])
        order = np.argsort(-steps, kind="stable")  # most steps first: active = a prefix
        plans = [plans[o] for o in order]
        sched = schedule(
            [p.client for p in plans], [p.n for p in plans], [jobs[o][1].seed for o in order]
        )
        c, t_max = len(plans), int(steps.max())
        counts = sched.counts
        width = sched.index.shape[2]
        valid = (torch.arange(width) < counts.unsqueeze(-1)).to(group.dtype)
        weights = (valid / counts.clamp(min=1).unsqueeze(-1).to(group.dtype)).to(group.device)
        index = sched.index.to(group.device)
        active = [int((steps > t).sum()) for t in range(t_max)]
        widths = counts.max(dim=0).values.tolist()

        base = {k: params[k].to(device=group.device, dtype=group.dtypes[k]) for k in params}
        frozen = {k: base[k] for k in group.frozen}
        anchors = {k: base[k] for k in group.trainable}
        stack = anchors  # step 0: every participant starts from the one global copy
        # the first step writes the stack into its final layout: each participant's
        # parameters one row of a (participants, model size) buffer, so its update is made
        # in place and handed to the server as that row (no copy, no second buffer)
        rows = _row_buffer(base, c)
        momentum: dict[str, Tensor] = {}
        loss_sum = torch.zeros(c, dtype=torch.float64, device=group.device)
        step = _make_step(group, hyper.prox_mu)
        ax = _arena([p.x for p in plans], [p.x_block for p in plans])
        ay = _arena([p.y for p in plans], [p.y_block for p in plans])
        arenas = (ax, ay) if ax is not None and ay is not None else None
        with torch.no_grad():
            for t in range(t_max):
                a, b, first = active[t], widths[t], t == 0
                x, y = _gather(
                    [p.x for p in plans[:a]],
                    [p.y for p in plans[:a]],
                    index[:a, t, :b],
                    arenas,
                    self._scratch,
                )
                live = stack if first else {k: v[:a] for k, v in stack.items()}
                grads, losses = step(live, frozen, anchors, x, y, weights[:a, t, :b], shared=first)
                loss_sum[:a] += losses.double()
                out = rows[1] if first and rows is not None else None
                updated = _sgd_step(live, grads, momentum, hyper, first=first, active=a, out=out)
                if first:
                    stack = updated

        # the stack is ordered by step count; the batch is in job order
        rank = np.empty(c, dtype=np.int64)
        rank[order] = np.arange(c)
        in_order = bool((order == np.arange(c)).all())
        deltas = _deltas(stack, base, c, None if in_order else torch.from_numpy(rank), rows)
        loss_per_step = (loss_sum[torch.from_numpy(rank)] / torch.from_numpy(steps)).tolist()
        for plan, (_, info) in zip(plans, (jobs[o] for o in order), strict=True):
            plan.client.last_feedback = dict(info.feedback)
        return FitBatch(
            tuple(cid for cid, _ in jobs),
            deltas,
            tuple(self._plans[cid].n for cid, _ in jobs),
            {"train_loss": tuple(loss_per_step), "local_steps": tuple(map(float, steps))},
        )

    # --- evaluate and the sequential path --------------------------------------------------

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]:
        """Evaluation is one forward pass per participant: it runs on the sequential path."""
        for cid, info in jobs:
            yield cid, self._sequential_eval(cid, params, info)

    def _sequential_eval(
        self, cid: ClientId, params: Params, info: RoundInfo
    ) -> EvalResult | ClientFailure:
        client = self._clients[cid]
        return self._guarded(cid, "evaluate", lambda: client.evaluate(params, info))

    def _sequential_fit(
        self, cid: ClientId, params: Params, info: RoundInfo
    ) -> FitResult | ClientFailure:
        client = self._clients[cid]
        return self._guarded(cid, "fit", lambda: client.fit(params, info))

    def _guarded(self, cid: ClientId, call: str, run: Callable[[], R]) -> R | ClientFailure:
        """Run one participant's call as ``Sequential`` does: its exception becomes a
        ``ClientFailure`` for that participant, never the end of the round."""
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return run()
        except Exception as exc:
            log.warning("client %s failed in %s: %s", cid, call, describe(exc))
            return ClientFailure(describe(exc))
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        self._scratch = _Scratch()
        self._clients = {}
        self._plans = {}
        self._groups = {}


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _names(cids: Sequence[ClientId], limit: int = 5) -> str:
    shown = ", ".join(map(str, cids[:limit]))
    return shown + (f", ... {len(cids) - limit} more" if len(cids) > limit else "")


__all__ = ["Vectorized", "client_schedule"]
