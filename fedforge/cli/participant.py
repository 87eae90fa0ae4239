"""The participant side of a deployment: ``fedforge client`` (a site from its site config,
``--site``, or participants of a built-in dataset, ``--config --id``), its argument checks,
and how its process ends. The parser lives with the other deployment commands
(``fedforge.cli.deploy.add_parsers``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedforge.cli.simulate import load_config


def server_address(text: str) -> str:
    """``HOST:PORT`` checked: gRPC would dial port 443 for a bare host."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--server {text}: give HOST:PORT, e.g. localhost:50051 (the port `fedforge "
            "server` prints, or its --port-file)"
        )
    return text


def check_certs(folder: str, ids: list[str]) -> None:
    """Every file the participants' mutual TLS needs is there, before any thread starts."""
    d = Path(folder)
    need = [d / "ca.pem"]
    for cid in ids:
        need += [d / "participants" / f"{cid}.pem", d / "participants" / f"{cid}.key"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"--certs {folder}: {missing[0]}{more} not found; make the certificates with "
            f"`fedforge certs {folder} --config CONFIG` and copy each participant its own"
        )


def parse_ids(specs: list[str], members: list[str]) -> list[str]:
    """``["0-2", "5", "client0007"]`` -> client ids, in the order given, without repeats."""
    out: list[str] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if part in members:
                picked = [part]
            elif "-" in part and all(x.isdigit() for x in part.split("-", 1)):
                a, b = (int(x) for x in part.split("-", 1))
                picked = [members[i] for i in range(a, b + 1) if 0 <= i < len(members)]
                if len(picked) != b - a + 1:
                    raise ValueError(f"--id {part}: the federation has {len(members)} participants")
            elif part.isdigit() and int(part) < len(members):
                picked = [members[int(part)]]
            else:
                raise ValueError(f"--id {part}: not an index below {len(members)} nor a client id")
            out.extend(c for c in picked if c not in out)
    return out


def run_client(args: argparse.Namespace) -> int:
    from fedforge.experiment import build
    from fedforge.transport.participant import Backoff, serve_all
    from fedforge.transport.security import INSECURE_WARNING, ClientTLS

    address = server_address(args.server)
    if args.site:
        if args.config or args.ids or args.overrides:
            raise ValueError(
                "--site builds this one site from its site config; --config, --id and --set "
                "belong to participants of a built-in dataset"
            )
        return run_site_client(args, address)
    if not args.ids:
        raise ValueError("give --site SITE.toml, or --config CONFIG with --id N")
    if not (args.certs or args.insecure):
        raise ValueError("give --certs DIR (mutual TLS) or --insecure")
    if not args.config and not args.overrides:
        raise ValueError(
            "give --config, the experiment file the server uses (or its --set overrides): "
            "without it this participant would build the built-in Fashion-MNIST defaults"
        )
    if args.max_attempts is not None and args.max_attempts < 0:
        raise ValueError(f"--max-attempts must be >= 0, got {args.max_attempts}")
    cfg = load_config(args.config, args.overrides)
    sim = build(cfg)  # the same data split as the server and the simulation
    ids = parse_ids(args.ids, sorted(sim.clients))
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    else:
        check_certs(args.certs, ids)
        from fedforge.transport.probe import check_tls

        check_tls(address, ClientTLS.from_dir(args.certs, ids[0]))
    try:
        _, errors = serve_all(
            {cid: sim.clients[cid] for cid in ids},
            address,
            tls=lambda cid: None if args.insecure else ClientTLS.from_dir(args.certs, cid),
            insecure=args.insecure,
            backoff=Backoff(attempts=args.max_attempts or None),
            seed=cfg.seed,
            state_dir=args.state_dir,
        )
    except KeyboardInterrupt:
        return 130
    if errors:
        for cid, why in errors.items():
            print(f"fedforge client: {cid}: {why}", file=sys.stderr)
        return 3
    return 0


def run_site_client(args: argparse.Namespace, address: str) -> int:
    """``fedforge client --site``: one participant, built from its site config alone."""
    from fedforge.config.site import load_site
    from fedforge.site import Site
    from fedforge.transport.participant import Backoff, serve_all
    from fedforge.transport.security import INSECURE_WARNING, ClientTLS

    if args.max_attempts is not None and args.max_attempts < 0:
        raise ValueError(f"--max-attempts must be >= 0, got {args.max_attempts}")
    site_cfg = load_site(args.site)
    site = Site(site_cfg)
    if not Path(site_cfg.data.path).exists():
        raise FileNotFoundError(
            f"{args.site}: data.path {site_cfg.data.path} does not exist (paths are relative "
            "to the site config)"
        )
    certs = args.certs or site_cfg.tls.certs
    insecure = args.insecure or (site_cfg.tls.insecure and not args.certs)
    if not insecure and not certs:
        raise ValueError(
            f"{args.site}: no certificates: set [tls] certs = DIR (from `fedforge certs`) in the "
            "site config or pass --certs DIR; --insecure only on one trusted machine"
        )
    if site_cfg.resources.threads:
        import torch

        torch.set_num_threads(site_cfg.resources.threads)
    tls = None
    if insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    else:
        assert certs is not None
        check_certs(certs, [site.id])
        tls = ClientTLS.from_dir(certs, site.id)
        check_identity(certs, site.id)
        from fedforge.transport.probe import check_tls

        check_tls(address, tls)
    try:
        _, errors = serve_all(
            {site.id: site},
            address,
            tls=lambda cid: tls,
            insecure=insecure,
            backoff=Backoff(attempts=args.max_attempts or None),
            seed=0,
            state_dir=args.state_dir,
        )
    except KeyboardInterrupt:
        return 130
    for cid, why in errors.items():
        print(f"fedforge client: {cid}: {why}", file=sys.stderr)
    if site.refused:
        print(
            f"fedforge client: {site.id}: the federation refused this site's data: {site.refused}",
            file=sys.stderr,
        )
        return 3
    return 3 if errors else 0


def check_identity(folder: str, cid: str) -> None:
    """The site's certificate names the site: a site config that claims another site's id
    is refused here, before it connects (the server would refuse it too)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    pem = (Path(folder) / "participants" / f"{cid}.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cid not in names:
        raise ValueError(
            f"site id {cid!r} does not match its certificate ({Path(folder) / 'participants' / (cid + '.pem')} "
            f"names {names}); a site joins only under the identity its certificate proves"
        )


def exit_after_client(command: str | None, code: int) -> None:
    """Leave a finished ``fedforge client`` process with ``participant.leave_process``.

    Other commands exit normally.
    """
    if command == "client":
        from fedforge.transport.participant import leave_process

        leave_process(code)
