"""The deployment subcommands: ``fedforge server``, ``client``, ``certs`` and ``status``.

``add_parsers(sub)`` adds them to the ``fedforge`` argument parser; each sets
``func`` to its handler (``client``'s lives in ``fedforge.cli.participant``). ``fedforge server CONFIG`` and ``fedforge client --config CONFIG
--id N`` build the same federation as ``fedforge simulate CONFIG`` (``experiment.build``):
the server keeps the model, sampler, aggregator and optimizer; participant N keeps the
N-th client's data (client ids in sorted order) and never sends it anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fedforge.cli import participant
from fedforge.cli.simulate import load_config
from fedforge.cli.tables import summary_table

log = logging.getLogger(__name__)


def _common_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set server.rounds=5 (repeatable)",
    )


def _security(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument(
        "--certs", metavar="DIR", help="certificates made by `fedforge certs` (mutual TLS)"
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="plain text, no authentication: for tests on one machine only (prints a warning)",
    )


def add_parsers(sub: Any) -> None:
    """Add server, client, certs and status to ``sub`` (an argparse subparsers action)."""
    srv = sub.add_parser(
        "server",
        help="run a federation server that participants connect to over gRPC",
        description=(
            "Serve the federation CONFIG describes: wait for participants (`fedforge client`), "
            "then train with the same server, aggregator and optimizer as `fedforge simulate`."
        ),
    )
    srv.add_argument("config", nargs="?", help="TOML or YAML experiment file")
    _common_config(srv)
    srv.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: the previous run's port with --resume, else 0 = any free port)",
    )
    srv.add_argument("--port-file", metavar="PATH", help="write the chosen port to PATH")
    _security(srv)
    srv.add_argument(
        "--min-participants",
        type=int,
        default=None,
        help="participants to wait for before the first round (default: all of the config)",
    )
    srv.add_argument("--join-timeout", type=float, default=600.0, help="seconds to wait for them")
    srv.add_argument("--round-timeout", type=float, default=600.0, help="round deadline (s)")
    srv.add_argument("--chunk-mib", type=float, default=4.0, help="chunk size in MiB (default 4)")
    srv.add_argument(
        "--max-message-mib",
        type=float,
        default=16384.0,
        help="largest model/update accepted, in MiB (default 16384)",
    )
    srv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    srv.add_argument(
        "--dashboard",
        type=int,
        metavar="PORT",
        help="also serve the live dashboard on PORT (0: any free port; see fedforge dashboard)",
    )
    srv.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the dashboard's address (default 127.0.0.1; any other prints a token)",
    )
    srv.set_defaults(func=run_server)

    cli = sub.add_parser(
        "client",
        help="run one or more participants that connect to a federation server",
        description=(
            "Serve a participant to the server at HOST:PORT until training ends: a site that "
            "brings its own data (--site SITE.toml), or participant(s) of a built-in dataset "
            "split by the same config the server uses (--config CONFIG --id N)."
        ),
    )
    cli.add_argument("--server", required=True, metavar="HOST:PORT")
    cli.add_argument(
        "--site",
        metavar="SITE.toml",
        help="this site's config: its id, its own data file, its certificates; the "
        "federation's model and training come from the server",
    )
    cli.add_argument(
        "--config",
        help="the same experiment file the server uses (required, unless the same --set "
        "overrides as the server's describe the federation)",
    )
    _common_config(cli)
    cli.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="N",
        help="participant index (0-based, in client-id order) or client id; "
        "ranges and lists allowed: --id 0-4, --id 2,5 (repeatable)",
    )
    cli.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep each participant's own state (error-feedback residual, SCAFFOLD control "
        "variate) in DIR/ID.safetensors, so it survives a restart of this process",
    )
    _security(cli, required=False)
    cli.add_argument(
        "--max-attempts",
        type=int,
        default=10,
        help="give up after N failed joins in a row (default 10, about 2 minutes of backoff; "
        "0 = keep trying for ever)",
    )
    cli.set_defaults(func=participant.run_client)

    cert = sub.add_parser(
        "certs",
        help="make a CA, a server certificate and per-participant certificates",
        description="Write DIR/ca.pem, DIR/server.pem and DIR/participants/ID.pem (+ keys).",
    )
    cert.add_argument("dir", help="output folder")
    who = cert.add_mutually_exclusive_group()
    who.add_argument("--config", help="one certificate per participant of this experiment")
    who.add_argument("--participants", type=int, help="N certificates: client0000 … client{N-1}")
    who.add_argument("--ids", help="comma-separated participant ids")
    cert.add_argument("--host", action="append", default=[], help="extra server name/IP (SAN)")
    cert.add_argument("--revoke", metavar="ID", action="append", default=[], help="revoke ID")
    cert.set_defaults(func=run_certs)

    st = sub.add_parser(
        "status",
        help="show a federation server's state: connected participants, round",
        description="Read RUN_DIR/federation.json and metrics.jsonl written by `fedforge server`.",
    )
    st.add_argument("run_dir")
    st.set_defaults(func=run_status)


# --- handlers ---------------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """``fedforge server``: one flow for both kinds of federation. A built-in dataset's
    server builds everything from the config as a simulation would; a server of sites that
    bring their data waits for them first, computes the federation's preprocessing from
    their sums and builds the model it shapes (``_site_server``)."""
    from fedforge import config as C
    from fedforge.backends.grpc_backend import GrpcBackend
    from fedforge.experiment import build, build_server, new_run_dir
    from fedforge.server import RunDir
    from fedforge.transport import status
    from fedforge.transport.quorum import Quorum
    from fedforge.transport.registry import Registry

    cfg = load_config(args.config, args.overrides, args.resume)
    sim = None if cfg.site_data else build(cfg)
    members = participant_ids(cfg) if sim is None else sorted(sim.clients)
    registry = Registry(members)
    channel = None
    if cfg.secagg is not None:  # participants mask in their own processes
        from fedforge.transport.secagg import GrpcSecAgg

        channel = GrpcSecAgg(registry, cfg.secagg.stage_timeout)
    transport = _listen(args, registry)
    need = args.min_participants or len(members)
    backend = GrpcBackend(registry, args.round_timeout)
    ended: str | None = None  # why the server ends before training finished
    run_dir: RunDir | None = None
    server = live = dashboard = None
    try:
        prep = None
        if sim is None:
            server, prep = _site_server(cfg, registry, backend, channel, need, args.join_timeout)
        elif channel is not None:
            server = build_server(
                cfg, sim.data, sim.model, sim.task, sim.clients,
                population=registry, secagg_channel=channel,
            )  # fmt: skip
        else:
            server = sim.server
        if args.resume:
            run_dir = RunDir(args.resume)
            run_dir.write_config(C.dump(cfg))
            if server.resume_from(run_dir):
                print(f"resumed at round {server.round}", file=sys.stderr)
        else:
            run_dir = new_run_dir(cfg)
        if prep is not None:
            (run_dir.path / "preprocessing.json").write_text(json.dumps(prep, indent=1))
        print(f"run directory: {run_dir.path}", file=sys.stderr, flush=True)
        live = status.StatusFile(run_dir.path, registry, transport.address, cfg.server.rounds)
        live.start()
        quorum = Quorum(registry, need, args.join_timeout)
        server.plugins.extend([quorum, live])
        if args.dashboard is not None:
            from fedforge.dashboard import Certs, Dashboard

            certs = None if args.insecure else Certs.from_dir(args.certs)
            dashboard = Dashboard(
                run_dir.path, args.dashboard_host, args.dashboard, certs=certs, status=live.doc
            ).start()
            dashboard.announce()
        why = quorum.gather(server)
        if why is not None:
            raise _CannotStart(why)
        history = server.run(
            registry,
            cfg.server.rounds,
            backend=backend,
            run_dir=run_dir,
            checkpoint_every=cfg.run.checkpoint_every,
            keep_checkpoints=cfg.run.keep_checkpoints,
            progress=not args.no_progress,
        )
    except _CannotStart as exc:
        ended = f"cannot start: {exc}"
        registry.finish(ended)  # the participants are told why, and leave
    except KeyboardInterrupt:  # SIGINT or SIGTERM: run() wrote metrics, plot, checkpoints
        ended = "interrupted"
    finally:
        if live is not None:
            live.stop("stopped" if (server is not None and server.stopped) or ended else "finished")
        transport.stop()
        if dashboard is not None:
            dashboard.stop()
    if ended is not None:
        if run_dir is None or _drop_if_unused(run_dir.path, fresh=not args.resume):
            print(f"fedforge server: {ended} (before any round; nothing kept)", file=sys.stderr)
        else:
            print(
                f"fedforge server: {ended}; continue with fedforge server --resume "
                f"{run_dir.path} (and the same --certs / --insecure)",
                file=sys.stderr,
            )
        return 130 if ended == "interrupted" else 1
    summary_table(history, f"{cfg.name}: {len(history)} rounds")
    assert server is not None  # training ran
    if server.stopped:
        print(f"stopped early: {server.stopped}", file=sys.stderr)
        return 1
    return 0


class _CannotStart(Exception):
    """Training cannot begin (too few participants, a site's data does not fit)."""


def _listen(args: argparse.Namespace, registry: Any) -> Any:
    """The transport server on ``--host``/``--port`` (with ``--resume``: the previous run's
    port), announced on stderr and in ``--port-file``."""
    from fedforge.transport import status
    from fedforge.transport.security import INSECURE_WARNING, ServerTLS
    from fedforge.transport.service import Limits, TransportServer

    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    port = args.port
    if port is None and args.resume:
        try:
            port = int(status.read(args.resume)["address"].rsplit(":", 1)[1])
        except (FileNotFoundError, KeyError, ValueError):
            port = 0
    limits = Limits(int(args.chunk_mib * 2**20), int(args.max_message_mib * 2**20))
    transport = TransportServer(
        registry,
        host=args.host,
        port=port or 0,
        tls=None if args.insecure else ServerTLS.from_dir(args.certs),
        insecure=args.insecure,
        limits=limits,
    ).start()
    if args.port_file:
        Path(args.port_file).write_text(f"{transport.port}\n")
    print(f"fedforge server listening on {transport.address}", file=sys.stderr, flush=True)
    return transport


def _site_server(
    cfg: Any, registry: Any, backend: Any, channel: Any, need: int, timeout: float
) -> tuple[Any, dict[str, Any]]:
    """Wait for ``need`` sites, ask each for its sums (``prepare``), compute the
    federation's preprocessing, and build the server for the model it shapes; from then
    on every task carries the federation's description with the preprocessing."""
    import torch

    from fedforge import data as D
    from fedforge.client.types import ClientFailure, EvalResult
    from fedforge.data.site_data import SiteDataError, merge_stats
    from fedforge.experiment import (
        build_model,
        build_server,
        evaluation_task,
        federation_doc,
        is_llm,
    )

    n = registry.wait_for(need, timeout)
    if n < need:
        raise _CannotStart(f"only {n} of {need} participants joined in {timeout:g} s")
    sites = sorted(registry)
    backend.options["federation"] = federation_doc(cfg, None)  # the schema, no statistics yet
    answers = backend.prepare(sites, cfg.seed)
    refused = {c: a.reason for c, a in answers.items() if isinstance(a, ClientFailure)}
    if refused:
        raise _CannotStart(
            "; ".join(f"site {c} refused: {why}" for c, why in sorted(refused.items()))
        )
    try:
        stats = {c: dict(a.metrics) for c, a in answers.items() if isinstance(a, EvalResult)}
        prep: dict[str, Any] = cfg.data.preprocessing(merge_stats(stats))
    except SiteDataError as exc:
        raise _CannotStart(str(exc)) from None
    shape, classes = cfg.data.shape(prep)
    print(
        f"preprocessing from {len(sites)} sites' sums: {prep['rows']} training rows, "
        f"input {shape}, {classes or 'regression, no'} classes",
        file=sys.stderr,
    )
    fd = D.FederatedData({}, None, classes, shape)
    initial = None
    if is_llm(cfg):  # the server's state is the adapter; the base stays frozen everywhere
        from fedforge.llm.adapters import adapter_params

        model, tokenizer = cfg.model.load()
        initial = adapter_params(model)
    else:
        torch.manual_seed(cfg.seed)  # model initialisation, as in simulation
        model = build_model(cfg.model, fd)
    task = evaluation_task(cfg.evaluation, classes)
    server = build_server(
        cfg, fd, model, task, registry, population=registry, secagg_channel=channel, initial=initial
    )
    if is_llm(cfg):
        from fedforge.llm.federation import AdapterFolder, samples_plugin

        server.plugins.append(AdapterFolder(model))  # each checkpoint holds a PEFT folder
        samples = samples_plugin(cfg.evaluation, model, tokenizer, cfg.data)
        if samples is not None:
            server.plugins.append(samples)
    backend.options["federation"] = federation_doc(cfg, prep)
    return server, prep


def participant_ids(cfg: Any) -> list[str]:
    """Who may join a federation whose sites bring their data: ``[federation]
    participants``, else the ids of its site configs (read for the id only, never the data)."""
    if cfg.federation.participants:
        return list(cfg.federation.participants)
    from fedforge.config.site import load_site

    return [load_site(p).id for p in cfg.federation.sites]


def _drop_if_unused(path: Path, fresh: bool) -> bool:
    """Remove a run directory this server made if no round ever ran in it (it holds only
    its config and status file); True if removed."""
    import shutil

    if not fresh or (path / "checkpoints").exists() and any((path / "checkpoints").iterdir()):
        return False
    if (path / "metrics.jsonl").is_file() and (path / "metrics.jsonl").stat().st_size:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def run_certs(args: argparse.Namespace) -> int:
    from fedforge.transport import certs

    folder = Path(args.dir)
    ids: list[str] = []
    if args.config:
        from fedforge.experiment import build_data

        cfg = load_config(args.config, [])
        if cfg.site_data:  # the federation's ids; no site's data is read
            ids = participant_ids(cfg)
        else:
            ids = sorted(build_data(cfg.data, cfg.seed).clients)
    elif args.participants is not None:
        ids = [f"client{i:04d}" for i in range(args.participants)]
    elif args.ids:
        ids = [x.strip() for x in args.ids.split(",") if x.strip()]
    if ids or not args.revoke:
        kept = certs.make_all(folder, ids, args.host)
        made = len(ids) - len(kept)
        print(f"{folder}: server certificate and {made} new participant certificate(s) written")
        if kept:
            print(
                f"kept the existing certificates of {', '.join(kept)} (delete its participants/ID.pem to issue a new one)"
            )
        print(
            f"give each site {folder}/ca.pem and its own participants/ID.pem and .key, never ca.key"
        )
    for cid in args.revoke:
        certs.revoke(folder, cid)
        print(f"revoked {cid} (the server re-reads {folder / 'revoked.json'})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from fedforge.transport import status

    doc = status.read(args.run_dir)
    metrics = Path(args.run_dir) / "metrics.jsonl"
    rounds = []
    if metrics.is_file():
        rounds = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()][-5:]
    print(status.render(doc, rounds))
    return 0
