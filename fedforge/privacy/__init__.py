"""Differential privacy: mechanisms emit ``DpEvent``s, one accountant composes them.

Participant level (a participant's whole dataset is protected):

- ``DPFedAvg``: central DP-FedAvg (McMahan et al. 2018), clip + server noise +
  fixed denominator, optionally with ``AdaptiveClip`` (Andrew et al. 2021);
- ``DistributedDPFedAvg`` + its ``DistributedNoise`` participant transform:
  each participant adds 1/m of the noise variance (for secure aggregation);
- ``LocalGaussian``: local DP, each update clipped and noised before it leaves.

Sample level (each training example is protected): ``DPSGDClient`` (Opacus
DP-SGD inside the participant) with ``SampleLevel`` as its event source.

Accounting (``dp-accounting``): ``PrivacyAccountant`` plugin (epsilon in every
round record, budget stop, state in checkpoints), ``epsilon`` and
``noise_multiplier_for`` (the inverse question), sampling as
``PoissonSampling`` / ``FixedSizeSampling``.
"""

from fedforge.privacy.accountant import EventSource, PrivacyAccountant
from fedforge.privacy.accounting import Method, Pld, Rdp, calibrate, epsilon, noise_multiplier_for
from fedforge.privacy.adaptive import AdaptiveClip, next_bound, update_noise_multiplier
from fedforge.privacy.central import DPFedAvg, Release
from fedforge.privacy.clip import clip_scale, clip_update
from fedforge.privacy.compat import check_composition
from fedforge.privacy.distributed import DistributedDPFedAvg, DistributedNoise
from fedforge.privacy.dpsgd import DpSgd, DPSGDClient, SampleLevel, check_opacus_supports
from fedforge.privacy.events import event_from_json, event_to_json
from fedforge.privacy.local import LocalGaussian
from fedforge.privacy.noise import add_gaussian, gaussian_like
from fedforge.privacy.sampling import FixedSizeSampling, PoissonSampling, Sampling

__all__ = [
    "AdaptiveClip",
    "DPFedAvg",
    "DPSGDClient",
    "DistributedDPFedAvg",
    "DistributedNoise",
    "DpSgd",
    "EventSource",
    "FixedSizeSampling",
    "LocalGaussian",
    "Method",
    "Pld",
    "PoissonSampling",
    "PrivacyAccountant",
    "Rdp",
    "Release",
    "SampleLevel",
    "Sampling",
    "add_gaussian",
    "calibrate",
    "check_composition",
    "check_opacus_supports",
    "clip_scale",
    "clip_update",
    "epsilon",
    "event_from_json",
    "event_to_json",
    "gaussian_like",
    "next_bound",
    "noise_multiplier_for",
    "update_noise_multiplier",
]
