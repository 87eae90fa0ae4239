"""The Ray backend: participants run in a pool of Ray actors, on this machine or a cluster.

Install with ``pip install 'fedforge[ray]'``; Ray is imported only when a ``RayBackend``
starts, so fedforge works without it.

Design, and why:

- **A pool of actors, each holding every client object.** The client mapping is put in
  Ray's object store once per ``start`` and each actor deserializes it once, the way the
  ``Processes`` backend's forked workers inherit it. Clients that share one ``nn.Module``
  (the usual simulation) still share it inside each actor, because the mapping is pickled
  as one object.
- **Parameters are broadcast once per round** with ``ray.put``; an actor fetches them once
  per round and reuses them for every participant it runs that round, so a 1 GB model costs
  one copy per actor per round, not one per participant.
- **One task in flight per actor.** An actor whose worker dies fails only the participant it
  was running (Ray fails every task queued on a dead actor, so queuing more would report
  innocent participants as failed); the dead actor is replaced and the round goes on.
  Actors that finish early get the next job at once (``ray.wait``), whatever the job order.
- **Results are yielded in job order** (buffering at most ``window`` finished results), so
  the server's streaming aggregate sums in the same order as ``Sequential`` and, with one
  torch thread per actor, ends with bit-identical parameters.
- A participant that raises is caught inside the actor and reported with the same reason
  text as ``Sequential`` (``"ValueError: ..."``).
- ``close()`` kills the actors it created and shuts Ray down only if ``start`` initialised
  it: a Ray session the caller had already opened (or a cluster it connected to before)
  is left as it was.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fedforge.client.types import Client, ClientFailure, EvalResult, FitResult, RoundInfo, describe
from fedforge.params import ClientId, Params
from fedforge.participant import Stack
from fedforge.server.backend import Job

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'fedforge[ray]'"


def import_ray() -> Any:
    """Ray, imported on first use: a clear error naming the extra when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"the Ray backend needs Ray, which is not installed: {_INSTALL_HINT} "
            f"(import failed with: {exc})"
        ) from exc
    return ray


class _Worker:
    """The body of one actor: runs any client's ``fit``/``evaluate`` on the round's params.

    Decorated with ``ray.remote`` at ``start`` (Ray is imported lazily)."""

    def __init__(self, clients: Mapping[ClientId, Client], threads: int | None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.clients = clients
        self._params_key: str | None = None
        self._params: Params = {}

    def _round_params(self, boxed: list[Any]) -> Params:
        # ``boxed`` holds the round's ObjectRef inside a list so that Ray does not resolve
        # (deserialize) it for every call: fetched once per round, then reused.
        import ray

        ref = boxed[0]
        key = ref.hex()
        if key != self._params_key:
            self._params = {}  # drop last round's copy before fetching this one
            self._params = ray.get(ref)
            self._params_key = key
        return self._params

    def run(
        self, call: str, cid: ClientId, info: RoundInfo, boxed: list[Any], state: Any
    ) -> tuple[FitResult | EvalResult | ClientFailure, Any]:
        """One participant's call; a stack's state comes with the job and goes back with the
        result (this actor's copy of the stack may be stale)."""
        params = self._round_params(boxed)
        client = self.clients[cid]
        try:
            if isinstance(client, Stack) and state is not None:
                client.load_state_tensors(state)
            out = getattr(client, call)(params, info)
        except Exception as exc:  # a participant's failure must not stop the round
            return ClientFailure(describe(exc)), None
        return out, client.state_tensors() if isinstance(client, Stack) else None

    def ping(self) -> bool:
        return True


class RayBackend:
    """Participants run as Ray actors; see the module docstring for the design.

    ``address``: an existing cluster to connect to (``"auto"``, ``"ray://host:10001"``,
    ``"host:6379"``); None starts a local Ray with ``num_cpus`` CPUs (None: all of them).
    If Ray is already initialised in this process, that session is used as is.
    ``actors``: pool size (None: the cluster's CPUs divided by ``cpus_per_actor``, at most
    one per client). ``threads_per_actor``: torch intra-op threads in each actor (1 keeps
    results bit-identical to ``Sequential(threads=1)``; None leaves Ray's default).
    ``window``: finished results buffered ahead of the job being yielded (None:
    2 x actors), which bounds the server's memory to that many updates.
    ``object_store_memory``: bytes for the object store of a local Ray (None: Ray's default).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        actors: int | None = None,
        cpus_per_actor: float = 1.0,
        threads_per_actor: int | None = 1,
        window: int | None = None,
        object_store_memory: int | None = None,
    ) -> None:
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
        if address is not None and (num_cpus is not None or object_store_memory is not None):
            raise ValueError(
                "num_cpus and object_store_memory apply only to a local Ray started here; "
                f"the cluster at {address!r} has its own"
            )
        if actors is not None and actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        if cpus_per_actor <= 0:
            raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
        if threads_per_actor is not None and threads_per_actor < 1:
            raise ValueError(f"threads_per_actor must be >= 1, got {threads_per_actor}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.threads_per_actor = threads_per_actor
        self.window = window
        self.object_store_memory = object_store_memory
        self._ray: Any = None
        self._owns_ray = False
        self._actor_cls: Any = None
        self._pool: list[Any] = []
        self._clients_ref: Any = None
        self._clients: Mapping[ClientId, Client] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        ray = import_ray()
        self._ray = ray
        self._kill_pool()
        if not ray.is_initialized():
            kwargs: dict[str, Any]
            if self.address is not None:
                kwargs = {"address": self.address}
            else:
                kwargs = {"include_dashboard": False}
                if self.num_cpus is not None:
                    kwargs["num_cpus"] = self.num_cpus
                if self.object_store_memory is not None:
                    kwargs["object_store_memory"] = self.object_store_memory
            ray.init(**kwargs)
            self._owns_ray = True
        try:
            self._start_pool(clients)
        except BaseException:
            self.close()  # leave nothing running (the server calls close only once started)
            raise

    def _start_pool(self, clients: Mapping[ClientId, Client]) -> None:
        ray = self._ray
        try:
            self._clients = clients
            self._clients_ref = ray.put(dict(clients))
        except Exception as exc:
            raise TypeError(
                "the Ray backend ships the client objects to its actors, and they could not "
                f"be serialized: {describe(exc)}"
            ) from exc
        self._actor_cls = ray.remote(num_cpus=self.cpus_per_actor, max_restarts=0)(_Worker)
        n = self.actors
        if n is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            n = max(1, int(cpus // self.cpus_per_actor))
        n = max(1, min(n, len(clients)))
        self._pool = [self._new_actor() for _ in range(n)]
        # Fail here, with Ray's reason, if the actors cannot start (e.g. unpicklable clients).
        ray.get([a.ping.remote() for a in self._pool])
        log.info("ray backend: %d actors (%g CPU each)", n, self.cpus_per_actor)

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self._clients_ref, self.threads_per_actor)

    def _kill_pool(self) -> None:
        for actor in self._pool:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception as exc:  # already dead: nothing to stop
                log.debug("ray backend: kill failed: %s", describe(exc))
        self._pool = []

    def close(self) -> None:
        if self._ray is None:
            return
        self._kill_pool()
        self._clients_ref = None
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._ray = None

    # --- rounds --------------------------------------------------------------------------

    def _collect(self, cid: ClientId, ref: Any) -> tuple[object, bool]:
        """The outcome of one finished task, and whether its actor died."""
        ray = self._ray
        try:
            out, state = ray.get(ref)
            client = self._clients.get(cid)
            if isinstance(client, Stack) and state is not None:
                client.load_state_tensors(state)
            return out, False
        except ray.exceptions.RayActorError as exc:
            reason = f"worker died: {_first_line(exc)}"
            log.warning("client %s: %s; replacing the actor", cid, reason)
            return ClientFailure(reason), True
        except ray.exceptions.RayError as exc:
            log.warning("client %s failed in Ray: %s", cid, describe(exc))
            return ClientFailure(f"ray: {_first_line(exc)}"), False

    def _run(
        self, call: str, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, Any]]:
        if not self._pool or self._ray is None:
            raise RuntimeError("backend not started")
        ray = self._ray
        boxed = [ray.put(params)]  # one broadcast per round; actors fetch it once each
        window = self.window or 2 * len(self._pool)
        free: deque[int] = deque(range(len(self._pool)))
        running: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (job index, actor index)
        done: dict[int, object] = {}  # finished, waiting for their turn in job order
        submitted = yielded = 0
        try:
            while yielded < len(jobs):
                while free and submitted < len(jobs) and submitted - yielded < window:
                    a = free.popleft()
                    cid, info = jobs[submitted]
                    client = self._clients.get(cid)
                    state = client.state_tensors() if isinstance(client, Stack) else None
                    ref = self._pool[a].run.remote(call, cid, info, boxed, state)
                    running[ref] = (submitted, a)
                    submitted += 1
                if yielded in done:
                    cid = jobs[yielded][0]
                    out = done.pop(yielded)
                    yielded += 1
                    yield cid, out
                    continue
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i, a = running.pop(ref)
                    out, died = self._collect(jobs[i][0], ref)
                    if died:
                        self._pool[a] = self._new_actor()
                    elif isinstance(out, ClientFailure):
                        log.warning("client %s failed in %s: %s", jobs[i][0], call, out.reason)
                    done[i] = out
                    free.append(a)
        finally:
            # The caller stopped early: best effort to not leave this round's work running.
            for ref in running:
                try:
                    ray.cancel(ref)
                except Exception as exc:
                    log.debug("ray backend: cancel failed: %s", describe(exc))

    def fit(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, FitResult | ClientFailure]]:
        return self._run("fit", jobs, params)

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]:
        return self._run("evaluate", jobs, params)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
