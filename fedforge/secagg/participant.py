"""A participant's side of one SecAgg+ round, stage by stage.

Bonawitz et al. 2017 (section 4) with the neighbour graph of Bell et al.
2020. Participant ``u`` with neighbours ``N(u)``:

1. advertise: fresh X25519 pairs ``(c_u, s_u)``; send both public keys;
2. share: draw the self-mask seed ``b_u``; Shamir-share ``b_u`` and the mask
   secret ``s_u`` t-of-|N(u)| among its neighbours; encrypt each pair of
   shares for neighbour ``v`` under ``HKDF(X25519(c_u, c_v))`` (AES-GCM);
3. check: open the shares relayed from its neighbours; report those that do
   not authenticate, so the server can exclude their senders before anyone
   masks with them;
4. masked input: clip ``x_u`` to L2 norm ``clip_norm`` (if set), add its own
   secret Gaussian noise (if ``noise_std``), encode ``q_u`` in fixed point
   with its weight multiplied in, then send
   ``y_u = q_u + PRG(b_u) + Σ_{v ∈ N(u) ∩ U2} ±PRG(s_uv)``, plus when
   ``u < v`` and minus otherwise, so each pair cancels in the sum;
5. unmask: for each neighbour ``v`` the server lists, send the share of
   ``b_v`` if ``v`` sent a masked input and of ``s_v`` if it did not; never
   both for the same ``v``, and only once per round.

All arithmetic on inputs is in ``Z_{2^k}`` (numpy unsigned words wrap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedforge.params import ClientId
from fedforge.secagg import keys, prg, shamir
from fedforge.secagg.config import RoundPlan, SecAggConfig
from fedforge.secagg.messages import ID_BYTES

SHARE_PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES


class Refused(Exception):
    """A participant declines a request that would break its privacy (it then stops)."""


@dataclass(frozen=True)
class PublicKeys:
    """What a participant advertises: two public keys and a commitment to its self-mask seed
    (so the server can tell a wrongly rebuilt seed from a right one, as it checks a rebuilt
    mask key against ``mask``)."""

    cipher: bytes
    mask: bytes
    seed_commitment: bytes

    NBYTES = 3 * keys.KEY_BYTES


def commit(seed: bytes, round_: int, cid: ClientId) -> bytes:
    """SHA-256 commitment to a 32-byte self-mask seed (hiding: the seed is uniform)."""
    tag = f"fedforge/secagg/seed-commitment/round={round_}/{cid}".encode()
    return hashlib.sha256(tag + b"\0" + seed).digest()


@dataclass(frozen=True)
class UnmaskShares:
    """A survivor's answer: shares of survivors' seeds ``b`` and of dropped ones' keys ``s``."""

    seeds: dict[ClientId, int]
    mask_keys: dict[ClientId, int]

    @property
    def nbytes(self) -> int:
        return (len(self.seeds) + len(self.mask_keys)) * (ID_BYTES + shamir.SHARE_BYTES)


def sign(u: ClientId, v: ClientId) -> int:
    """+1 if ``u`` adds the pairwise mask it shares with ``v``, -1 if it subtracts it."""
    return 1 if u < v else -1


def pair_seed(mine: keys.KeyPair, peer_public: bytes, round_: int) -> bytes:
    """The seed of the pairwise mask two participants share in ``round_``."""
    return keys.derive(mine.agree(peer_public), "mask", round_)


class Participant:
    def __init__(self, cid: ClientId, plan: RoundPlan, config: SecAggConfig, rng: prg.Randomness):
        self.cid = cid
        self.plan = plan
        self.config = config
        self.fixed = config.fixed
        self._rng = rng
        self._neighbours = plan.graph[cid]
        self._cipher = keys.KeyPair.from_secret(rng.token(keys.KEY_BYTES))
        self._mask = keys.KeyPair.from_secret(rng.token(keys.KEY_BYTES))
        self._seed = rng.token(keys.KEY_BYTES)  # b_u, the self-mask seed
        self._shared = False
        self._peers: dict[ClientId, PublicKeys] = {}
        self._held: dict[ClientId, tuple[int, int]] = {}  # sender -> (share of b, share of s)
        self._channels: dict[ClientId, bytes] = {}  # neighbour -> AES-GCM key for shares
        self._answered = False

    # --- 1. advertise ------------------------------------------------------------------
    def advertise(self) -> PublicKeys:
        commitment = commit(self._seed, self.plan.round, self.cid)
        return PublicKeys(self._cipher.public, self._mask.public, commitment)

    # --- 2. share ----------------------------------------------------------------------
    def share_keys(self, peers: Mapping[ClientId, PublicKeys]) -> dict[ClientId, bytes]:
        """Encrypted shares for each neighbour in ``peers`` (those that advertised keys)."""
        if not set(peers) <= self._neighbours:
            raise Refused(f"{self.cid}: server sent keys of non-neighbours")
        t = self.plan.threshold
        if len(peers) < t:
            raise Refused(f"{self.cid}: {len(peers)} neighbours advertised keys, fewer than {t}")
        if len({p.cipher for p in peers.values()}) != len(peers):
            raise Refused(f"{self.cid}: two neighbours advertised the same key")
        self._peers = dict(peers)
        self._shared = True
        order = sorted(peers)
        xs = [self.plan.point(v) for v in order]
        b_shares = shamir.split(int.from_bytes(self._seed, "big"), t, xs, self._rng)
        s_shares = shamir.split(int.from_bytes(self._mask.secret, "big"), t, xs, self._rng)
        out: dict[ClientId, bytes] = {}
        for v, b, s in zip(order, b_shares, s_shares, strict=True):
            key = self._channel(v)
            body = shamir.to_bytes(b) + shamir.to_bytes(s)
            nonce = self._rng.token(keys.NONCE_BYTES)
            out[v] = keys.seal(key, nonce, body, self.plan.round, self.cid, v)
        return out

    def _channel(self, v: ClientId) -> bytes:
        if v not in self._channels:
            shared = self._cipher.agree(self._peers[v].cipher)
            self._channels[v] = keys.derive(shared, "share", self.plan.round)
        return self._channels[v]

    # --- 3. check ----------------------------------------------------------------------
    def check_shares(self, ciphertexts: Mapping[ClientId, bytes]) -> list[ClientId]:
        """Open the shares neighbours sent; returns the senders whose shares failed."""
        bad: list[ClientId] = []
        for u, ct in sorted(ciphertexts.items()):
            if u not in self._peers:
                bad.append(u)
                continue
            key = self._channel(u)
            try:
                body = keys.open_sealed(key, ct, self.plan.round, u, self.cid)
                if len(body) != SHARE_PLAINTEXT_BYTES:
                    raise ValueError(f"share of {len(body)} bytes")
                half = shamir.SHARE_BYTES
                self._held[u] = (shamir.from_bytes(body[:half]), shamir.from_bytes(body[half:]))
            except ValueError:  # DecryptionError is a ValueError, as are malformed shares
                bad.append(u)
        return bad

    # --- 4. masked input ---------------------------------------------------------------
    def masked_input(
        self, x: np.ndarray, weight: float, active: Collection[ClientId]
    ) -> np.ndarray:
        """``y_u`` for the update ``x`` (float64, (d,)); ``active``: neighbours still in."""
        if not self._shared:
            raise Refused(f"{self.cid}: asked for a masked input before sharing keys")
        if not set(active) <= set(self._peers):
            raise Refused(f"{self.cid}: server lists neighbours that never advertised keys")
        bound = self.config.clip_norm
        if bound is not None:  # participant-level DP: clip before anything leaves
            norm = float(np.linalg.norm(x))
            x = x * (bound / norm) if norm > bound else x
        noise = None
        if self.config.noise_std > 0:  # distributed DP: the noise is this participant's secret
            g = np.random.default_rng(int.from_bytes(self._rng.token(16), "big"))
            noise = g.normal(0.0, self.config.noise_std, x.size)
        y = self.fixed.encode(x, weight, self.plan.scale, noise)  # (d,) words mod 2^k
        prg.accumulate(y, self._seed)
        for v in sorted(active):
            seed = pair_seed(self._mask, self._peers[v].mask, self.plan.round)
            prg.accumulate(y, seed, sign(self.cid, v))
        return y

    # --- 5. unmask ---------------------------------------------------------------------
    def unmask(
        self, survivors: Collection[ClientId], dropped: Collection[ClientId]
    ) -> UnmaskShares:
        """Shares of ``b_v`` for surviving and of ``s_v`` for dropped neighbours."""
        if self._answered:
            raise Refused(f"{self.cid}: already answered an unmask request this round")
        alive, gone = set(survivors), set(dropped)
        if alive & gone:
            raise Refused(f"{self.cid}: server lists {sorted(alive & gone)[:3]} as both")
        if len(alive) < self.plan.threshold:
            raise Refused(f"{self.cid}: only {len(alive)} survivors, fewer than the threshold")
        self._answered = True
        seeds = {v: self._held[v][0] for v in sorted(alive) if v in self._held}
        mask_keys = {v: self._held[v][1] for v in sorted(gone) if v in self._held}
        return UnmaskShares(seeds, mask_keys)
