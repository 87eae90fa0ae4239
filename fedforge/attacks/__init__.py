"""Byzantine attacks for simulation: who is malicious, and what they send.

Model poisoning: ``SignFlip``, ``Scale``, ``GaussianNoise`` (need only the
attacker's own update), ``ALIE`` and ``IPM`` (need the round's honest
updates). Data poisoning: ``flip_labels``. Run them with ``UnderAttack``
(an aggregator wrapper, any attack) or ``MaliciousClient`` (a client
wrapper, non-omniscient attacks); pick attackers with ``choose_malicious``.
"""

from fedforge.attacks.adversary import MaliciousClient, UnderAttack
from fedforge.attacks.base import Attack, RoundView, check_fraction, choose_malicious
from fedforge.attacks.label_flip import FlippedLabels, flip_label, flip_labels
from fedforge.attacks.model_poisoning import GaussianNoise, Scale, SignFlip
from fedforge.attacks.omniscient import ALIE, IPM, alie_z

__all__ = [
    "ALIE",
    "IPM",
    "Attack",
    "FlippedLabels",
    "GaussianNoise",
    "MaliciousClient",
    "RoundView",
    "Scale",
    "SignFlip",
    "UnderAttack",
    "alie_z",
    "check_fraction",
    "choose_malicious",
    "flip_label",
    "flip_labels",
]
