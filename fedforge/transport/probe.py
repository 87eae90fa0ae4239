"""One TLS handshake with the server before a participant starts, to tell a certificate
problem (permanent: say so and stop) from a server that is not up yet (retry).

gRPC reports both as ``UNAVAILABLE``, with the real cause (a bad signature) only in its
debug text, so a participant holding another CA's certificates would retry until its
attempts ran out and then blame the network.
"""

from __future__ import annotations

import socket
import ssl

from fedforge.transport.security import ClientTLS


class CertificateProblem(ValueError):
    """The server and this participant do not trust each other's certificates."""


def check_tls(address: str, tls: ClientTLS, timeout: float = 5.0) -> None:
    """Raise ``CertificateProblem`` if a mutual TLS handshake with ``address`` fails for a
    certificate; return quietly if it succeeds or if nothing answers (not up yet)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    if tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return  # no server yet: the participant's backoff handles it
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            # TLS 1.3: the server checks our certificate after our side of the handshake;
            # its verdict (an alert) or its first HTTP/2 frame is what arrives next
            s.settimeout(timeout)
            if not s.recv(1):
                raise ssl.SSLError("it closed the connection right after the handshake")
    except ssl.SSLCertVerificationError as exc:
        raise CertificateProblem(
            f"the server at {address} presents a certificate that {tls.ca} does not verify "
            f"({exc.verify_message}): use the ca.pem of the `fedforge certs` folder the "
            "server uses"
        ) from None
    except ssl.SSLError as exc:
        raise CertificateProblem(
            f"the server at {address} refused this participant's certificate {tls.cert} "
            f"({getattr(exc, 'reason', None) or exc.args[0]}): it must be made by the "
            "server's CA (`fedforge certs`)"
        ) from None
    except OSError:
        return  # a timeout or a reset unrelated to certificates: let gRPC try
    finally:
        raw.close()
