"""The process backend: participants run in a pool of worker processes (all cores).

Workers are forked after ``start``, so they inherit the client objects
without serializing them. Each round the global parameters are written once
to a safetensors file in shared memory and memory-mapped by every worker;
updates come back as safetensors bytes (no pickled tensors). Results are
yielded in job order with a bounded number in flight, so the server's
streaming aggregate sums in the same order as the sequential backend.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file, save, save_file

from fedforge.client.types import Client, ClientFailure, EvalResult, FitResult, RoundInfo, describe
from fedforge.params import ClientId, Params
from fedforge.participant import Stack
from fedforge.server.backend import Job

log = logging.getLogger(__name__)

_WORKER_CLIENTS: Mapping[ClientId, Client] = {}
_WORKER_PARAMS: tuple[str, Params] | None = None


def _init_worker(clients: Mapping[ClientId, Client], threads: int) -> None:
    global _WORKER_CLIENTS
    _WORKER_CLIENTS = clients
    # Ctrl-C reaches the whole process group: the parent handles it (final metrics, the
    # message); a worker would only print a traceback for a task it was told to drop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _params(path: str) -> Params:
    global _WORKER_PARAMS
    if _WORKER_PARAMS is None or _WORKER_PARAMS[0] != path:
        _WORKER_PARAMS = (path, load_file(path))
    return _WORKER_PARAMS[1]


def _fit_task(
    cid: ClientId, info: RoundInfo, path: str, state: bytes | None
) -> tuple[bytes, int, dict[str, float], bytes | None]:
    """One participant's fit in a worker. A stack's state (the forked copy is stale) comes
    with the job and goes back with the result, so the parent always holds the latest."""
    client = _WORKER_CLIENTS[cid]
    if isinstance(client, Stack) and state is not None:
        client.load_state_tensors(load(state))
    res = client.fit(_params(path), info)
    out_state = save(client.state_tensors()) if isinstance(client, Stack) else None
    return (
        save({k: v.contiguous() for k, v in res.update.items()}),
        res.num_examples,
        dict(res.metrics),
        out_state,
    )


def _eval_task(cid: ClientId, info: RoundInfo, path: str) -> tuple[float, int, dict[str, float]]:
    res = _WORKER_CLIENTS[cid].evaluate(_params(path), info)
    return res.loss, res.num_examples, dict(res.metrics)


class Processes:
    name = "processes"

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.threads_per_worker = threads_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._clients: Mapping[ClientId, Client] = {}
        self._tmp: Path | None = None
        self._cleanup: weakref.finalize[Any, Any] | None = None
        self._round_file = 0

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        self.close()  # started before: its pool and folder go first
        self._clients = clients
        shm = Path("/dev/shm")
        self._tmp = Path(tempfile.mkdtemp(prefix="fedforge-", dir=shm if shm.is_dir() else None))
        # /dev/shm is memory: remove the folder even if close() is never called (dropped
        # backend, exception, interpreter exit); only a SIGKILL can leave it behind.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        self._spawn()

    def _spawn(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("fork"),
            initializer=_init_worker,
            initargs=(self._clients, self.threads_per_worker),
        )

    def _publish(self, params: Params) -> str:
        assert self._tmp is not None
        self._round_file += 1
        path = self._tmp / f"params_{self._round_file}.safetensors"
        save_file({k: v.contiguous() for k, v in params.items()}, str(path))
        old = self._tmp / f"params_{self._round_file - 2}.safetensors"
        old.unlink(missing_ok=True)
        return str(path)

    def _state(self, cid: ClientId) -> bytes | None:
        client = self._clients[cid]
        return save(client.state_tensors()) if isinstance(client, Stack) else None

    def _run(
        self, jobs: Sequence[Job], task: Any, params: Params, with_state: bool = False
    ) -> Iterator[tuple[ClientId, Any]]:
        if self._pool is None:
            raise RuntimeError("backend not started")
        path = self._publish(params)
        pending: deque[tuple[ClientId, Future[Any]]] = deque()
        it = iter(jobs)
        window = 2 * self.workers
        broken = False
        while True:
            while not broken and len(pending) < window:
                job = next(it, None)
                if job is None:
                    break
                args = (job[0], job[1], path) + ((self._state(job[0]),) if with_state else ())
                try:
                    pending.append((job[0], self._pool.submit(task, *args)))
                except BrokenProcessPool:
                    broken = True
                    pending.append((job[0], _failed_future("worker pool is broken")))
            if not pending:
                return
            cid, fut = pending.popleft()
            try:
                yield cid, fut.result()
            except BrokenProcessPool as exc:
                # A worker died (e.g. killed by the OOM killer): fail its job, restart the pool.
                log.warning("client %s: worker process died (%s); restarting pool", cid, exc)
                yield cid, ClientFailure(f"worker process died: {exc}")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._spawn()
                broken = False
            except Exception as exc:
                log.warning("client %s failed: %s", cid, describe(exc))
                yield cid, ClientFailure(describe(exc))

    def fit(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, FitResult | ClientFailure]]:
        for cid, out in self._run(jobs, _fit_task, params, with_state=True):
            if isinstance(out, ClientFailure):
                yield cid, out
            else:
                blob, n, metrics, state = out
                client = self._clients[cid]
                if isinstance(client, Stack) and state is not None:
                    client.load_state_tensors(load(state))
                yield cid, FitResult(load(blob), n, metrics)

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]:
        for cid, out in self._run(jobs, _eval_task, params):
            if isinstance(out, ClientFailure):
                yield cid, out
            else:
                yield cid, EvalResult(*out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._cleanup is not None:
            self._cleanup()  # runs shutil.rmtree once; later calls do nothing
            self._cleanup = None
        self._tmp = None


def _failed_future(reason: str) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_exception(RuntimeError(reason))
    return fut
