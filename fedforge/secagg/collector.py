"""The server's side of one SecAgg+ round: route, count, and finally unmask the sum.

The server keeps one running sum of masked inputs modulo ``2^k`` (O(model)
memory, DESIGN invariant 4) and the participant sets of Bonawitz et al.:
``U1`` advertised keys, ``U2`` shared keys whose shares enough neighbours
could open, ``U3`` sent a masked input, ``U4`` answered the unmask request.
At the end it rebuilds, from ``t`` shares each,

- ``b_u`` of every ``u ∈ U3`` (checked against the commitment ``u``
  advertised) and subtracts the self mask ``PRG(b_u)``;
- ``s_u`` of every ``u ∈ U2 \\ U3`` (checked against ``u``'s advertised
  public key) and removes the pairwise masks ``u`` shares with each
  surviving neighbour, which no masked input of ``u`` cancels.

Pairwise masks between two members of ``U3`` cancel in the sum. If a
secret it needs has fewer than ``t`` shares, or fewer than ``t`` inputs
arrived, the round aborts with the reason (``RoundAborted``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedforge.aggregate.base import AggregationAborted
from fedforge.params import ClientId
from fedforge.secagg import keys, prg, shamir
from fedforge.secagg.config import RoundPlan
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.participant import PublicKeys, UnmaskShares, commit, pair_seed, sign


class RoundAborted(AggregationAborted):
    """Secure aggregation could not produce this round's sum; the message says why."""


@dataclass(frozen=True)
class Outcome:
    total: np.ndarray  # (d,) float64: Σ_{u ∈ included} a_u x_u, up to quantization
    included: tuple[ClientId, ...]
    weights: dict[ClientId, float]
    excluded: dict[ClientId, str]


class Collector:
    def __init__(self, plan: RoundPlan, fixed: FixedPoint, dim: int) -> None:
        self.plan = plan
        self.fixed = fixed
        self.dim = dim
        self.keys: dict[ClientId, PublicKeys] = {}  # U1
        self.sent: dict[ClientId, dict[ClientId, bytes]] = {}  # sender -> recipient -> ct
        self.inbox: dict[ClientId, dict[ClientId, bytes]] = {}  # recipient -> sender -> ct
        self.reports: dict[ClientId, frozenset[ClientId]] = {}  # recipient -> failed senders
        self.u2: frozenset[ClientId] = frozenset()
        self.weights: dict[ClientId, float] = {}  # U3 and their weights
        self.answers: dict[ClientId, UnmaskShares] = {}  # U4
        self.excluded: dict[ClientId, str] = {}
        self._sum = np.zeros(dim, dtype=fixed.dtype)  # Σ y_u mod 2^k

    def _nbrs(self, cid: ClientId) -> frozenset[ClientId]:
        return self.plan.graph[cid]

    def _need(self, stage: str, have: int) -> None:
        if have < self.plan.threshold:
            raise RoundAborted(
                f"{stage}: {have} participants left, fewer than the threshold {self.plan.threshold}"
            )

    # --- advertise ------------------------------------------------------------------------
    def take_keys(self, cid: ClientId, pk: PublicKeys) -> None:
        if cid not in self.plan.graph:
            return
        if any(len(b) != keys.KEY_BYTES for b in (pk.cipher, pk.mask, pk.seed_commitment)):
            self.excluded[cid] = "advertised malformed public keys"
            return
        self.keys[cid] = pk

    def close_advertise(self) -> None:
        self._need("advertise_keys", len(self.keys))

    def keys_for(self, cid: ClientId) -> dict[ClientId, PublicKeys]:
        return {v: self.keys[v] for v in sorted(self._nbrs(cid)) if v in self.keys}

    # --- share --------------------------------------------------------------------------
    def take_shares(self, cid: ClientId, cts: Mapping[ClientId, bytes]) -> None:
        if cid in self.keys:
            self.sent[cid] = {
                v: ct for v, ct in cts.items() if v in self._nbrs(cid) and v in self.keys
            }

    def shares_for(self, cid: ClientId) -> dict[ClientId, bytes]:
        return {u: cts[cid] for u, cts in sorted(self.sent.items()) if cid in cts}

    def take_report(self, cid: ClientId, failed: list[ClientId]) -> None:
        if cid in self.keys:
            self.reports[cid] = frozenset(failed)

    def close_sharing(self) -> frozenset[ClientId]:
        """``U2``: senders with at least ``t`` neighbours holding a share that opened."""
        t = self.plan.threshold
        ok = set()
        for u, cts in self.sent.items():
            holders = [v for v in cts if v in self.reports and u not in self.reports[v]]
            if len(holders) >= t:
                ok.add(u)
            else:
                failed = sorted(v for v in cts if v in self.reports and u in self.reports[v])
                why = f"failed to open at {failed[:5]}" if failed else "not confirmed"
                self.excluded[u] = (
                    f"malformed shares: only {len(holders)} of its neighbours hold a valid "
                    f"share (threshold {t}); shares {why}"
                )
        for u in sorted(set(self.keys) - set(self.sent)):
            self.excluded.setdefault(u, "sent no shares (dropped)")
        self.u2 = frozenset(ok)
        self._need("share_keys", len(self.u2))
        return self.u2

    def active_for(self, cid: ClientId) -> frozenset[ClientId]:
        return self._nbrs(cid) & self.u2

    # --- masked input -------------------------------------------------------------------
    def take_masked(self, cid: ClientId, y: object, weight: float) -> str | None:
        """Fold ``y`` into the sum; returns why it was refused, or None."""
        if cid not in self.u2:
            return "not in the round's key-sharing set (dropped or excluded before masking)"
        if cid in self.weights:
            return "sent a second masked input"
        if not isinstance(y, np.ndarray) or y.dtype != self.fixed.dtype or y.shape != (self.dim,):
            return f"masked input is not {self.dim} {self.fixed.dtype} words"
        self._sum += y
        self.weights[cid] = float(weight)
        return None

    # --- unmask -------------------------------------------------------------------------
    def unmask_request(self, cid: ClientId) -> tuple[frozenset[ClientId], frozenset[ClientId]]:
        """(surviving, dropped) neighbours of ``cid`` whose secrets the server needs."""
        alive = frozenset(self.weights)
        nbrs = self._nbrs(cid)
        return nbrs & alive, (nbrs & self.u2) - alive

    def close_inputs(self) -> None:
        for u in sorted(self.u2 - set(self.weights)):
            self.excluded.setdefault(u, "sent no masked input (dropped)")
        self._need("masked_input", len(self.weights))

    def take_answer(self, cid: ClientId, shares: UnmaskShares) -> None:
        if cid in self.weights:
            self.answers[cid] = shares

    def _rebuild(self, u: ClientId, field: str) -> int:
        pts = [
            (self.plan.point(v), getattr(a, field)[u])
            for v, a in sorted(self.answers.items())
            if u in getattr(a, field)
        ]
        if len(pts) < self.plan.threshold:
            what = "self-mask seed" if field == "seeds" else "mask key"
            raise RoundAborted(
                f"cannot unmask: {len(pts)} shares of {u}'s {what} arrived, fewer than the "
                f"threshold {self.plan.threshold}"
            )
        return shamir.reconstruct(pts, self.plan.threshold)

    def finish(self) -> Outcome:
        """Remove every mask that does not cancel; dequantize; ``RoundAborted`` if stuck."""
        self._need("unmask", len(self.answers))
        total = self._sum.copy()
        r = self.plan.round
        # Secrets first (cheap, and a wrong share aborts before any mask is expanded), then
        # every mask folded into ``total`` in place: the expensive part, O(model) memory.
        seeds = []
        for u in sorted(self.weights):
            b = self._rebuild(u, "seeds")
            seed = b.to_bytes(32, "big") if b < 2**256 else b""
            if not seed or commit(seed, r, u) != self.keys[u].seed_commitment:
                raise RoundAborted(
                    f"cannot unmask: shares of {u}'s self-mask seed disagree with its commitment"
                )
            seeds.append(seed)
        pairs = []
        for u in sorted(self.u2 - set(self.weights)):
            s = self._rebuild(u, "mask_keys")
            pair = keys.KeyPair.from_secret(s.to_bytes(32, "big")) if s < 2**256 else None
            if pair is None or pair.public != self.keys[u].mask:
                raise RoundAborted(f"cannot unmask: shares of {u}'s mask key disagree with its key")
            pairs.append((u, pair))
        for seed in seeds:
            prg.accumulate(total, seed, -1)
        alive = set(self.weights)
        for u, pair in pairs:
            for v in sorted(self._nbrs(u) & alive):
                # v added the mask it shares with u if v < u: take it out, else put it back
                prg.accumulate(total, pair_seed(pair, self.keys[v].mask, r), -sign(v, u))
        return Outcome(
            self.fixed.decode(total) / self.plan.scale,
            tuple(sorted(self.weights)),
            dict(self.weights),
            dict(self.excluded),
        )
