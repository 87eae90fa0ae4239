"""A small FLoRA federation that a test and a participant process build identically: the
tiny random Llama, seeded token blocks per participant, ranks (4, 8, 16)."""

from __future__ import annotations

import sys

import torch

import fedforge as ff
from fedforge.client.local import adamw
from fedforge.llm import Flora, FloraBase, FloraClient, LoraSpec, LoraStacking, llm_plan
from fedforge.llm.tiny import tiny_llama

RANKS = {"p4": 4, "p8": 8, "p16": 16}
SPEC = LoraSpec(rank=2, alpha=8, seed=0)
TRAINING = llm_plan(steps=2, batch_size=2, optimizer=adamw(2e-2))


def blocks(cid: str, n: int = 6, seq: int = 16) -> torch.Tensor:
    """Token blocks with a participant-specific pattern (so training lowers the loss)."""
    g = torch.Generator().manual_seed(sum(map(ord, cid)))
    start = torch.randint(0, 200, (n, 1), generator=g)
    step = 1 + RANKS.get(cid, 1) % 5
    return (start + step * torch.arange(seq)) % 256


def base() -> FloraBase:
    return FloraBase(tiny_llama(hidden_size=32, layers=2, seed=0), SPEC)


def clients(shared: FloraBase, ids: list[str] | None = None) -> dict[str, FloraClient]:
    return {
        cid: FloraClient(shared, blocks(cid), RANKS[cid], training=TRAINING)
        for cid in ids or sorted(RANKS)
    }


def server(shared: FloraBase, plugins=()) -> ff.Server:  # type: ignore[no-untyped-def]
    return ff.Server(
        shared.targets(),
        sampler=ff.Sampler(per_round=len(RANKS), seed=0),
        aggregator=LoraStacking(),
        algorithm=Flora(),
        plugins=plugins,
        seed=0,
    )


def serve(address: str, cid: str) -> None:
    """A participant process: its own base, its own rank, over gRPC until training ends."""
    from fedforge.transport import Backoff, connect

    torch.set_num_threads(1)
    stats = connect(
        clients(base(), [cid])[cid], address, client_id=cid, insecure=True,
        backoff=Backoff(attempts=40),
    )
    print(f"{cid} finished: {stats.finished}", flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
