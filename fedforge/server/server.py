"""The central server: the round loop, its seams and the algorithm's hooks.

    distribute  sample participants (seeded), send params + RoundInfo
    client work any Client's fit, run by a Backend, results streamed back
    aggregate   validate each update, fold it into a streaming Accumulator
    finalize    the aggregate is a pseudo-gradient for the server optimizer

then evaluate the new global model (centrally on a server-held set and/or
federatedly on sampled participants' evaluation splits) and send that
performance back to the participants with the next round's RoundInfo.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fedforge.aggregate import (
    Accumulator,
    AggregationAborted,
    Aggregator,
    MaskedAccumulator,
    NormBound,
    RowAccumulator,
    WeightedMean,
    check_participants,
    min_participants,
)
from fedforge.algorithms import Algorithm, Plain, split
from fedforge.client.metrics import combine, report
from fedforge.client.types import (
    Client,
    ClientFailure,
    EvalResult,
    FitResult,
    MaskedUpload,
    RoundInfo,
)
from fedforge.optim import FedAvg, ServerOptimizerSpec
from fedforge.params import ClientId, Params, clone, l2_norm, num_bytes
from fedforge.participant import Participants, Plan, payload_of
from fedforge.plugins import Plugin
from fedforge.seeding import derive_seed
from fedforge.server import checkpoint as ckpts
from fedforge.server.backend import Backend, FitBatch
from fedforge.server.finite import magnitude, next_state
from fedforge.server.history import History, Record
from fedforge.server.rundir import RunDir
from fedforge.server.sampler import Sampler
from fedforge.server.sequential import Sequential
from fedforge.server.validate import check_rows
from fedforge.transforms import Broadcast, Context, Pipeline

log = logging.getLogger(__name__)

_BROADCAST = "\x1ebroadcast\x1f"  # prefix of the downlink's state among the client state
_ALGORITHM = "\x1ealgorithm\x1f"  # prefix of the algorithm's server state (SCAFFOLD's c)
_SERVER_SIDE = ("\x1ebroadcast\x1f", "\x1ealgorithm\x1f")

CentralEval = Callable[[Params], EvalResult]


@dataclass
class _Tally:
    """What one round's results add up to, as they arrive."""

    failed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    loss_sum: float = 0.0
    loss_weight: int = 0
    bytes_up: int = 0
    scales: dict[str, float] = field(default_factory=dict)  # weight * max |update|
    rows: list[tuple[list[str], Tensor]] = field(default_factory=list)  # bulk rows' scales

    def all_scales(self) -> dict[str, float]:
        """Every folded participant's weighted magnitude (see ``finite``)."""
        out = dict(self.scales)
        for ids, scale in self.rows:
            out.update(zip(ids, scale.tolist(), strict=True))
        return out


@dataclass(frozen=True)
class EvalPlan:
    """When and where the global model is evaluated."""

    every: int = 1  # evaluate after every k-th round (and always after the last)
    federated: Sampler | None = None  # participants to evaluate on; None: no federated eval
    before: bool = False  # also evaluate the starting model, as round 0 of a fresh run

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"eval every must be >= 1, got {self.every}")


class Server:
    def __init__(
        self,
        params: Params,
        *,
        sampler: Sampler,
        aggregator: Aggregator | None = None,
        optimizer: ServerOptimizerSpec | None = None,
        central_eval: CentralEval | None = None,
        eval_plan: EvalPlan | None = None,
        pipeline: Pipeline | None = None,
        broadcast: Broadcast | None = None,
        plugins: Sequence[Plugin] = (),
        update_bound: NormBound | None = None,
        algorithm: Algorithm | None = None,
        seed: int = 0,
    ) -> None:
        self.params = clone(params)
        self.algorithm: Algorithm = algorithm or Plain()
        self.algo_state = self.algorithm.init_state(self.params)  # e.g. SCAFFOLD's c
        self.sampler = sampler
        self.aggregator = aggregator or WeightedMean()
        self.optimizer = (optimizer or FedAvg()).build()
        self.optimizer.bind(self.params)
        self.central_eval = central_eval
        self.eval_plan = eval_plan or EvalPlan()
        self.pipeline = pipeline or Pipeline()  # the uplink: participants encode, we decode
        self.plan = Plan(self.pipeline, self.algorithm)
        self.template = self.plan.template(self.params)  # an upload's layout
        self.participants: Participants | None = None  # the stacks, once ``run`` starts
        self._stack_state: dict[str, Tensor] = {}  # restored before ``run`` built the stacks
        self.broadcast = broadcast  # None: every participant gets the float32 model
        self.plugins: list[Plugin] = list(plugins)
        if isinstance(self.aggregator, Plugin):
            self.plugins.insert(0, self.aggregator)
        names = [p.name for p in self.plugins]
        if len(set(names)) != len(names):
            raise ValueError(f"plugins need distinct names, got {names}")
        self.stopped: str | None = None
        self.update_bound = update_bound
        for p in self.plugins:
            p.check(self)
        self.seed = seed
        self.round = 0
        self.history = History()
        self.feedback: dict[str, float] = {}

    # --- checkpointing -------------------------------------------------------------------

    def checkpoint(self) -> ckpts.Checkpoint:
        state = {
            "history": self.history.records,
            "feedback": self.feedback,
            "seed": self.seed,
            "plugins": {p.name: p.state() for p in self.plugins},
        }
        client_state = self.participant_state()
        if self.broadcast is not None:
            down = self.broadcast.state_tensors()
            client_state.update({_BROADCAST + k: v for k, v in down.items()})
        client_state.update({_ALGORITHM + k: v.clone() for k, v in self.algo_state.items()})
        return ckpts.Checkpoint(
            self.round, clone(self.params), self.optimizer.state_dict(), state, client_state
        )

    def restore(self, ckpt: ckpts.Checkpoint) -> None:
        """Continue from ``ckpt`` exactly as if the run had never stopped."""
        if ckpt.state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"checkpoint was made with seed {ckpt.state['seed']}, this server has {self.seed}"
            )
        self.params = clone(ckpt.params)
        self.optimizer.bind(self.params)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.round = ckpt.round
        self.history = History(list(ckpt.state.get("history", [])))
        self.history.truncate(ckpt.round)
        self.feedback = dict(ckpt.state.get("feedback", {}))
        cs = ckpt.client_state
        self._stack_state = {k: v for k, v in cs.items() if not k.startswith(_SERVER_SIDE)}
        n = len(_ALGORITHM)
        if any(k.startswith(_ALGORITHM) for k in cs):
            self.algo_state = {k[n:]: v.clone() for k, v in cs.items() if k.startswith(_ALGORITHM)}
        if self.participants is not None:
            self.participants.load_state_tensors(self._stack_state)
        if self.broadcast is not None:
            n = len(_BROADCAST)
            self.broadcast.load_state_tensors(
                {k[n:]: v for k, v in cs.items() if k.startswith(_BROADCAST)}
            )
        saved = ckpt.state.get("plugins", {})
        for p in self.plugins:
            if p.name in saved:
                p.load_state(saved[p.name])

    def participant_state(self) -> dict[str, Tensor]:
        """The simulated participants' own state (their stacks'), flat; over gRPC it stays
        in the participant processes and this is empty."""
        if self.participants is None:
            return dict(self._stack_state)
        return self.participants.state_tensors()

    def resume_from(self, run_dir: RunDir) -> bool:
        """Restore the newest checkpoint in ``run_dir``; False if it has none."""
        found = ckpts.list_checkpoints(run_dir.checkpoints)
        if not found:
            return False
        self.restore(ckpts.load(found[-1], expected=self.params))
        run_dir.rewrite_metrics(self.history)
        log.info("resumed from %s (round %d)", found[-1], self.round)
        return True

    # --- the round -----------------------------------------------------------------------

    def _info(self, kind: str, round_: int, cid: ClientId) -> RoundInfo:
        seed = derive_seed(self.seed, kind, round_, cid)
        if self.plan.identity:  # no uplink to seed: skip two hashes per participant
            return RoundInfo(round_, seed, dict(self.feedback))
        ctx = self.transform_context(round_, cid)
        return RoundInfo(
            round_,
            seed,
            dict(self.feedback),
            uplink_seed=ctx.seed,
            round_seed=ctx.round_seed or 0,
        )

    def transform_context(self, r: int, cid: ClientId) -> Context:
        """The uplink pipeline's context for ``cid``'s round-``r`` update (both ends use it)."""
        return Context(
            r,
            cid,
            derive_seed(self.seed, "transform", r, cid),
            round_seed=derive_seed(self.seed, "transform-round", r),  # RandomK(shared=True)
        )

    def _receive(self, r: int, cid: ClientId, res: FitResult) -> tuple[Params, int, str | None]:
        """Decode one participant's upload (its stack encoded it) and validate it.
        Returns (update, bytes on the wire, reason to leave it out or None)."""
        size = num_bytes(res.update)
        if self.plan.identity:
            return res.update, size, self.algorithm.check(res, self.params)
        ctx = self.transform_context(r, cid)
        try:
            update = self.pipeline.decode(payload_of(res.update), ctx, self.template)
        except ValueError as exc:  # PayloadError, or not an encoded upload at all
            return res.update, size, f"undecodable update: {exc}"
        why = self.algorithm.check(FitResult(update, res.num_examples, res.metrics), self.params)
        return update, size, why

    def _should_stop(self, round_: int) -> str | None:
        for p in self.plugins:
            reason = p.before_round(self, round_)
            if reason is not None:
                return f"{p.name}: {reason}"
        return None

    def _take(
        self, r: int, cid: ClientId, res: FitResult | MaskedUpload, acc: Accumulator, t: _Tally
    ) -> None:
        """One participant's result: through the pipeline, validated, folded (or left out).
        A masked upload goes straight into a secure accumulator, the only one that can add
        it (the server cannot read it, so cannot check it: the accumulator refuses bad ones)."""
        if isinstance(res, MaskedUpload):
            t.bytes_up += res.words.nbytes
            if not isinstance(acc, MaskedAccumulator):
                t.rejected[cid] = "a masked upload, but this round is not securely aggregated"
                log.warning("round %d: update from %s left out: %s", r, cid, t.rejected[cid])
                return
            acc.add_masked(res.words, res.num_examples, cid)
            self._tally_loss(t, res.metrics, res.num_examples)
            return
        update, size, why = self._receive(r, cid, res)
        if why is None and self.update_bound is not None:
            why = self.update_bound.check(update)
        t.bytes_up += size
        if why is not None:
            log.warning("round %d: update from %s left out: %s", r, cid, why)
            t.rejected[cid] = why
            return
        acc.add(update, res.num_examples, cid)
        t.scales[cid] = res.num_examples * magnitude(update)  # to name who overflows a sum
        self._tally_loss(t, res.metrics, res.num_examples)

    @staticmethod
    def _tally_loss(t: _Tally, metrics: Mapping[str, float], n: int) -> None:
        if "train_loss" in metrics:
            t.loss_sum += float(metrics["train_loss"]) * n
            t.loss_weight += n

    def _take_batch(self, r: int, batch: FitBatch, acc: Accumulator, t: _Tally) -> None:
        """A backend's batch of results: validated and folded row by row in one go when
        nothing needs the updates one at a time (no transform, no norm bound, a linear
        accumulator over one flat buffer); otherwise each row as its own result. Either way
        the same rows are left out and the same arithmetic folds the rest."""
        fold = acc if isinstance(acc, RowAccumulator) else None
        rows = None
        if fold is not None and not self.pipeline.transforms and self.update_bound is None:
            rows = batch.rows(list(self.params))
        if fold is None or rows is None:
            for cid, res in batch.results():
                self._take(r, cid, res, acc, t)
            return
        verdicts, sizes = check_rows(batch, rows, self.params)
        t.bytes_up += num_bytes(batch.updates)  # every row's update, as _take counts them
        keep = [i for i, why in enumerate(verdicts) if why is None]
        for cid, why in zip(batch.ids, verdicts, strict=True):
            if why is not None:
                log.warning("round %d: update from %s left out: %s", r, cid, why)
                t.rejected[cid] = why
        if not keep:
            return
        if len(keep) < len(batch):
            rows = rows[keep]
        fold.add_rows(rows, [batch.num_examples[i] for i in keep])
        # weight * |row sum| of every folded row, kept as tensors: read only if the round's
        # aggregate overflows (finite.culprits), never per row in Python
        scale = torch.tensor(batch.num_examples, dtype=torch.float64) * sizes.double()
        if len(keep) < len(batch):
            t.rows.append(([batch.ids[i] for i in keep], scale[keep]))
        else:
            t.rows.append((list(batch.ids), scale))
        losses = batch.metrics.get("train_loss")
        if losses is not None:
            for i in keep:
                t.loss_sum += float(losses[i]) * batch.num_examples[i]
                t.loss_weight += batch.num_examples[i]

    def fit_round(self, clients: Mapping[ClientId, Client], backend: Backend) -> Record:
        r = self.round + 1
        t0 = time.perf_counter()
        sampled = self.sampler.sample(r, list(clients))
        jobs = [(cid, self._info("fit", r, cid)) for cid in sampled]
        template = self.template if self.template is not None else self.params
        acc = self.aggregator.open(template)
        if self.broadcast is not None:
            # Participants hold the broadcast reference (lossy downlink); their updates are
            # relative to it and the server still steps its own params (DoubleSqueeze-style).
            sent = self.broadcast.publish(self.params, self.round)
            bytes_down = sum(self.broadcast.send(cid).nbytes for cid in sampled)
        else:
            sent, bytes_down = self.params, num_bytes(self.params) * len(sampled)
        extra = self.algorithm.broadcast(self.algo_state)  # what the algorithm sends beside
        if extra:
            sent = {**sent, **extra}
            bytes_down += num_bytes(extra) * len(sampled)
        tally = _Tally()
        for item in backend.fit(jobs, sent):
            if isinstance(item, FitBatch):
                self._take_batch(r, item, acc, tally)
                continue
            cid, res = item
            if isinstance(res, ClientFailure):
                tally.failed[cid] = res.reason
                continue
            self._take(r, cid, res, acc, tally)
        record: Record = {
            "round": r,
            "sampled": len(sampled),
            "sampled_ids": list(sampled),  # who was asked: the dashboard's participant table
            "aggregated": acc.count,
            "model_bytes": num_bytes(self.params),  # one uncompressed copy: compression ratios
            "bytes_down": bytes_down,
            "bytes_up": tally.bytes_up,
        }
        if tally.failed:
            record["failed"] = tally.failed
        if tally.rejected:
            record["rejected"] = tally.rejected
        if tally.loss_weight:
            record["train_loss"] = tally.loss_sum / tally.loss_weight
        need = max(self.sampler.min_clients, min_participants(self.aggregator))
        try:
            if acc.count < need:
                raise AggregationAborted(
                    f"only {acc.count} usable updates; this round needs {need} "
                    f"(min_clients={self.sampler.min_clients}, {self.aggregator.name} needs "
                    f"{min_participants(self.aggregator)})"
                )
            delta = acc.result()
        except AggregationAborted as exc:
            record["skipped"] = f"aggregation aborted: {exc}"
            log.warning("round %d: global model unchanged: %s", r, exc)
        else:
            shares = acc.report()
            if shares:
                record["aggregator_shares"] = shares
            step, extras = split(delta, self.algorithm.kind)
            step, algo_state = self.algorithm.finalize(
                step, extras, self.algo_state, acc.count, len(clients)
            )
            self.params, why = next_state(
                self.optimizer, self.params, delta, step, tally.all_scales
            )
            if why is None:
                record["update_norm"] = l2_norm(step)
                self.algo_state = algo_state
            else:  # DESIGN invariant 7: the global state stays finite
                record["skipped"] = why
                log.warning("round %d: global model unchanged: %s", r, why)
        self.round = r
        record["fit_time_s"] = time.perf_counter() - t0
        return record

    def evaluate_round(
        self, clients: Mapping[ClientId, Client], backend: Backend, record: Record
    ) -> None:
        r = self.round
        if self.central_eval is not None:
            central = self.central_eval(self.params)
            record["central_loss"] = central.loss
            for k, v in report(central.metrics).items():
                record[f"central_{k}"] = v
        fed = self.eval_plan.federated
        if fed is not None:
            ids = fed.sample(r, list(clients))
            jobs = [(cid, self._info("evaluate", r, cid)) for cid in ids]
            n_total, loss_sum = 0, 0.0
            answers: list[tuple[int, Mapping[str, float]]] = []
            for _, res in backend.evaluate(jobs, self.params):
                if isinstance(res, ClientFailure):
                    continue
                n_total += res.num_examples
                loss_sum += res.loss * res.num_examples
                answers.append((res.num_examples, res.metrics))
            if n_total:
                record["federated_loss"] = loss_sum / n_total
                # summed statistics where the metrics have them (exact), else weighted means
                for k, v in report(combine(answers)).items():
                    record[f"federated_{k}"] = v
                if "federated_perplexity" in record:  # exp of the pooled token loss, not a
                    # mean of perplexities: a language model's participants weigh their loss
                    # by the tokens they predicted
                    record["federated_perplexity"] = math.exp(record["federated_loss"])
        self.feedback = {
            k: float(v)
            for k, v in record.items()
            if k.startswith(("central_", "federated_")) and isinstance(v, float | int)
        }

    def _plugin_files(self, folder: Path) -> None:
        for p in self.plugins:
            p.checkpoint_files(self, folder)

    # --- the loop ------------------------------------------------------------------------

    def run(
        self,
        clients: Mapping[ClientId, Client],
        rounds: int,
        *,
        backend: Backend | None = None,
        run_dir: RunDir | str | Path | None = None,
        checkpoint_every: int = 1,
        keep_checkpoints: int | None = 2,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> History:
        """Train until ``rounds`` rounds are done (counting rounds restored from a checkpoint).

        ``stop_after`` ends this call after that many rounds, as a crash would (used to test
        resumption).
        """
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        if not clients:
            raise ValueError("no clients: a federation needs at least one participant")
        self.sampler.check(len(clients))
        check_participants(self.aggregator, self.sampler.count(len(clients)))
        if self.eval_plan.federated is not None:
            self.eval_plan.federated.check(len(clients))
        rd = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir)
        backend = backend or Sequential()
        self.participants = Participants(clients, self.plan)
        self.participants.load_state_tensors(self._stack_state)
        backend.start(self.participants)  # every backend runs each participant's whole stack
        if self.eval_plan.before and self.round == 0 and not len(self.history):
            start: Record = {"round": 0}  # the model before any training, the baseline
            self.evaluate_round(self.participants, backend, start)
            self.history.append(start)
            if rd is not None:
                rd.log_round(start)
        done_here = 0
        bar = tqdm(
            total=rounds, initial=self.round, desc="rounds", unit="round", disable=not progress
        )
        try:
            with logging_redirect_tqdm():
                while self.round < rounds:
                    self.stopped = self._should_stop(self.round + 1)
                    if self.stopped is not None:
                        log.warning("stopping before round %d: %s", self.round + 1, self.stopped)
                        if rd is not None:
                            ckpts.save(
                                rd.checkpoints,
                                self.checkpoint(),
                                keep_checkpoints,
                                self._plugin_files,
                            )
                        break
                    record = self.fit_round(clients, backend)
                    t0 = time.perf_counter()
                    if self.round % self.eval_plan.every == 0 or self.round == rounds:
                        self.evaluate_round(clients, backend, record)
                    record["eval_time_s"] = time.perf_counter() - t0
                    for p in self.plugins:
                        p.after_round(self, record)
                    self.history.append(record)
                    if rd is not None:
                        rd.log_round(record)
                        if self.round % checkpoint_every == 0 or self.round == rounds:
                            ckpts.save(
                                rd.checkpoints,
                                self.checkpoint(),
                                keep_checkpoints,
                                self._plugin_files,
                            )
                    bar.update(1)
                    bar.set_postfix(_postfix(record), refresh=False)
                    done_here += 1
                    if stop_after is not None and done_here >= stop_after:
                        break
        finally:
            bar.close()
            backend.close()
            if rd is not None:
                rd.finish(self.history)
        return self.history


def _postfix(record: Record) -> dict[str, Any]:
    keys = ("train_loss", "central_accuracy", "central_loss", "federated_accuracy", "epsilon")
    out: dict[str, Any] = {k: f"{record[k]:.4g}" for k in keys if k in record}
    out["up_MB"] = f"{record['bytes_up'] / 1e6:.3g}"
    if record.get("failed") or record.get("rejected"):
        out["dropped"] = len(record.get("failed", {})) + len(record.get("rejected", {}))
    return out
