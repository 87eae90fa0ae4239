"""Secure aggregation: SecAgg+ (Bell et al. 2020) on Bonawitz et al. (2017).

The server learns the (weighted) sum of the participants' updates and
nothing else about any one of them, and the sum survives participants that
drop out mid-round. One concept per module:

- ``keys``: X25519 agreement, HKDF, AES-GCM for shares in transit;
- ``shamir``: t-of-n secret sharing over GF(2^521 - 1);
- ``prg``: AES-CTR mask expansion and the participants' randomness;
- ``fixedpoint``: clipped, weighted updates as words modulo 2^k;
- ``graph``: complete or sparse (Harary) neighbour graphs, the threshold rule;
- ``layout``: the vector a participant masks (flat, or linearly compressed);
- ``config``: ``SecAggConfig`` and the per-round ``RoundPlan``;
- ``participant`` / ``collector``: the two sides' state machines;
- ``messages`` / ``dropout`` / ``simulation``: transcript, dropout plans, driver;
- ``aggregator``: ``SecureAggregator``, how it plugs into the ``Server``, and the
  ``Channel`` / ``RoundDriver`` seam where the participants run: in process
  (``SimulatedRound``) or in their own processes over gRPC
  (``fedforge.transport.secagg.GrpcSecAgg``).
"""

from fedforge.secagg.aggregator import (
    Channel,
    RoundDriver,
    SecureAggregator,
    check_linear,
    check_pipeline,
)
from fedforge.secagg.collector import Collector, Outcome, RoundAborted
from fedforge.secagg.config import RoundPlan, SecAggConfig
from fedforge.secagg.dropout import DropoutPlan
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import Auto, Complete, Sparse, auto_degree, check_threshold
from fedforge.secagg.layout import Layout
from fedforge.secagg.messages import SERVER, Message, Stage, Transcript
from fedforge.secagg.participant import Participant, PublicKeys, Refused, UnmaskShares
from fedforge.secagg.simulation import SimulatedRound, run_round

__all__ = [
    "SERVER",
    "Auto",
    "Channel",
    "Collector",
    "Complete",
    "DropoutPlan",
    "FixedPoint",
    "Layout",
    "Message",
    "Outcome",
    "Participant",
    "PublicKeys",
    "Refused",
    "RoundAborted",
    "RoundDriver",
    "RoundPlan",
    "SecAggConfig",
    "SecureAggregator",
    "SimulatedRound",
    "Sparse",
    "Stage",
    "Transcript",
    "UnmaskShares",
    "auto_degree",
    "check_linear",
    "check_pipeline",
    "check_threshold",
    "run_round",
]
