"""Flower's FedAvg aggregation on the same updates as ``benchmarks/aggregation_speed.py``.

Runs in Flower's own virtual environment (Flower pins protobuf<7, fedforge needs >=7):
``bash benchmarks/peers/flower_env.sh`` builds it; ``aggregation_speed.py`` starts this
script with that interpreter, passes the job as JSON on stdin and reads one JSON object
from stdout. Needs only numpy and flwr: the updates are regenerated here from the seed by
the same rule as in the main script (``np.random.default_rng([seed, j])``, float32 standard
normal, one array per tensor), and a CRC of every pool update goes back so that the main
script can check the bytes are the same.

Three of Flower 1.42's aggregation paths, read from its source:

- ``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords``: what the Message-API
  ``FedAvg`` (Flower 1.42's current strategy) calls on the round's replies. Each reply's
  ``Array`` holds ``np.save`` bytes, deserialized with ``np.load`` inside the function.
- ``flwr.server.strategy.aggregate.aggregate_inplace``: the legacy ``FedAvg`` default
  (``inplace=True``), on ``FitRes`` whose ``Parameters`` hold ``np.save`` bytes.
- ``flwr.server.strategy.aggregate.aggregate``: the legacy non-in-place path on NDArrays
  already in memory (the same input fedforge's accumulators get). It keeps a weighted copy
  of every update, so it runs on fewer updates (``legacy_updates``) to fit in memory.

Serialization of the inputs happens before the clock starts; deserialization inside a
function is part of that function's time, because Flower's aggregation does it.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import zlib
from typing import Any

import numpy as np


def make_update(seed: int, j: int, shapes: list[tuple[str, list[int]]]) -> list[np.ndarray]:
    """Pool update ``j``: the same bytes as ``aggregation_speed.make_update``."""
    total = sum(int(np.prod(s)) for _, s in shapes)
    flat = np.random.default_rng([seed, j]).standard_normal(total, dtype=np.float32)
    out, offset = [], 0
    for _, shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[offset : offset + n].reshape(shape).copy())
        offset += n
    return out


def crc(arrays: list[np.ndarray]) -> int:
    value = 0
    for a in arrays:
        value = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), value)
    return value


def main() -> None:
    job: dict[str, Any] = json.load(sys.stdin)
    import flwr
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.server.strategy.aggregate import aggregate, aggregate_inplace
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    shapes = [(str(n), list(s)) for n, s in job["shapes"]]
    names = [n for n, _ in shapes]
    seed, pool_size, n_updates = int(job["seed"]), int(job["pool"]), int(job["updates"])
    n_legacy, repeats = int(job["legacy_updates"]), int(job["repeats"])
    weights = [int(w) for w in job["weights"]]
    pool = [make_update(seed, j, shapes) for j in range(pool_size)]
    fingerprint = [crc(u) for u in pool]
    model_bytes = sum(a.nbytes for a in pool[0])

    # Inputs as Flower receives them (built before timing).
    params = [ndarrays_to_parameters(u) for u in pool]
    fit_results = [
        (None, FitRes(Status(Code.OK, ""), params[i % pool_size], weights[i], {}))
        for i in range(n_updates)
    ]
    array_records = [
        ArrayRecord({n: Array(a) for n, a in zip(names, u, strict=True)}) for u in pool
    ]
    records = [
        RecordDict(
            {
                "arrays": array_records[i % pool_size],
                "metrics": MetricRecord({"num-examples": weights[i]}),
            }
        )
        for i in range(n_updates)
    ]
    legacy = [(pool[i % pool_size], weights[i]) for i in range(n_legacy)]

    def read() -> None:
        for i in range(n_updates):
            for a in pool[i % pool_size]:
                a.sum()

    saved: dict[str, Any] = {}

    def arrayrecords() -> None:
        out = aggregate_arrayrecords(records, "num-examples")
        if "result" not in saved:
            saved["result"] = np.concatenate([out[n].numpy().reshape(-1) for n in names])

    methods: dict[str, tuple[Any, int]] = {
        "read": (read, n_updates),
        "aggregate_arrayrecords": (arrayrecords, n_updates),
        "aggregate_inplace": (lambda: aggregate_inplace(fit_results), n_updates),  # type: ignore[arg-type]
        "aggregate": (lambda: aggregate(legacy), n_legacy),
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):  # interleaved, so load from other jobs hits every method alike
        for name, (fn, _n) in methods.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    if job.get("result_path"):
        np.save(job["result_path"], saved["result"])
    json.dump(
        {
            "flwr": flwr.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "fingerprint": fingerprint,
            "model_bytes": model_bytes,
            "methods": {
                name: {"updates": n, "seconds": seconds[name]} for name, (_, n) in methods.items()
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
