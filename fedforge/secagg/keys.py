"""Key agreement and authenticated encryption between two participants.

Each participant of a round holds two X25519 key pairs (Bonawitz et al.
2017, section 4): a *cipher* pair, whose agreement with a neighbour's cipher
key encrypts the Shamir shares that the server relays between them, and a
*mask* pair, whose agreement seeds the pairwise mask the two of them add
with opposite signs. X25519 (RFC 7748) gives both sides the same 32-byte
secret; HKDF-SHA256 (RFC 5869) turns it into a key for one purpose and one
round, so a key never serves two purposes.

Shares travel under AES-256-GCM. The round and both participant ids are the
associated data, so a ciphertext replayed to another recipient or into
another round fails to open, exactly as a corrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedforge.params import ClientId

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class DecryptionError(ValueError):
    """A ciphertext that does not open: corrupted, truncated, or meant for someone else."""


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; ``secret`` is the 32 raw private bytes (what Shamir shares)."""

    secret: bytes
    public: bytes
    private: X25519PrivateKey

    @staticmethod
    def from_secret(secret: bytes) -> KeyPair:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"an X25519 secret has {KEY_BYTES} bytes, got {len(secret)}")
        private = X25519PrivateKey.from_private_bytes(secret)
        return KeyPair(secret, private.public_key().public_bytes_raw(), private)

    def agree(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with a peer's public key (the same from both sides)."""
        if len(peer_public) != KEY_BYTES:
            raise ValueError(f"an X25519 public key has {KEY_BYTES} bytes, got {len(peer_public)}")
        return self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def derive(shared: bytes, purpose: str, round_: int) -> bytes:
    """A 32-byte key for ``purpose`` in round ``round_`` from an agreed secret (HKDF-SHA256)."""
    info = f"fedforge/secagg/{purpose}/round={round_}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def _associated(round_: int, sender: ClientId, recipient: ClientId) -> bytes:
    # Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    s, r = sender.encode(), recipient.encode()
    return b"%d|%d:%s|%d:%s" % (round_, len(s), s, len(r), r)


def seal(
    key: bytes, nonce: bytes, plaintext: bytes, round_: int, sender: ClientId, recipient: ClientId
) -> bytes:
    """``nonce || AES-GCM(plaintext)``, bound to (round, sender, recipient)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"AES-GCM nonce has {NONCE_BYTES} bytes, got {len(nonce)}")
    ad = _associated(round_, sender, recipient)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def open_sealed(
    key: bytes, ciphertext: bytes, round_: int, sender: ClientId, recipient: ClientId
) -> bytes:
    """Invert ``seal``; raise ``DecryptionError`` for anything that does not authenticate."""
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError(f"ciphertext of {len(ciphertext)} bytes is too short")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, _associated(round_, sender, recipient))
    except InvalidTag as exc:
        raise DecryptionError(
            f"share from {sender!r} to {recipient!r} fails authentication"
        ) from exc
