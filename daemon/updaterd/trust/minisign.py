"""minisign key and signature formats (Ed25519 through `cryptography`), both directions.

Formats (from minisign's documentation):
  public key:  base64("Ed" | key_id[8] | ed25519_pk[32])
  secret key:  base64("Ed" | kdf_alg[2] | "B2" | salt[32] | ops[8] | mem[8] |
                      key_id[8] | ed25519_sk[64] (seed | pk) | checksum[32])
  signature:   untrusted comment line, base64("ED"|key_id|sig) where "ED" signs BLAKE2b-512 of
               the file (prehashed) and "Ed" the raw file (legacy), the trusted comment line, and
               base64(global_sig) = Ed25519 over sig | trusted comment.
Only unencrypted secret keys (`minisign -W`) are read; encrypted ones get a clear error.
Every failure raises SignatureError: verification fails closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from types import ModuleType

from updaterd.errors import SignatureError


def _ed25519() -> ModuleType:
    """cryptography's Ed25519, loaded at the first key or signature: its 7 MiB stay out of a
    daemon that has not checked a feed yet (and of updaterd's other commands)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


_ALG = b"Ed"
_ALG_PREHASHED = b"ED"
_UNENCRYPTED = b"\x00\x00"
_SCRYPT = b"Sc"
_CHK_ALG = b"B2"
MAX_COMMENT = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what}: not valid base64") from None


def _key_id_hex(key_id: bytes) -> str:
    """The key ID as the minisign tool prints it: a little-endian number in upper-case hex,
    without leading zeros (so one key in sixteen shows fewer than 16 digits)."""
    return f"{int.from_bytes(key_id, 'little'):X}"


@dataclass(frozen=True)
class PublicKey:
    """A minisign public key: the 8-byte key id and the Ed25519 key."""

    key_id: bytes
    raw: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """From the base64 line or the whole `.pub` file; raises ValueError with the reason."""
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if lines and lines[0].startswith("untrusted comment:"):
            lines = lines[1:]
        if len(lines) != 1:
            raise ValueError("not a minisign public key (expected one base64 line)")
        try:
            data = base64.b64decode(lines[0], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a minisign public key (bad base64)") from None
        if len(data) != 42 or data[:2] != _ALG:
            raise ValueError("not a minisign Ed25519 public key (wrong length or algorithm)")
        return cls(key_id=data[2:10], raw=data[10:])

    @property
    def id_hex(self) -> str:
        return _key_id_hex(self.key_id)

    def to_base64(self) -> str:
        return _b64(_ALG + self.key_id + self.raw)

    def to_file(self) -> str:
        return f"untrusted comment: minisign public key {self.id_hex}\n{self.to_base64()}\n"


@dataclass(frozen=True)
class SecretKey:
    """An unencrypted minisign secret key."""

    key_id: bytes
    seed: bytes

    @classmethod
    def generate(cls) -> SecretKey:
        seed = _ed25519().Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(key_id=secrets.token_bytes(8), seed=seed)

    @property
    def public(self) -> PublicKey:
        pk = _ed25519().Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return PublicKey(self.key_id, pk.public_bytes_raw())

    def _checksum(self) -> bytes:
        sk = self.seed + self.public.raw
        return hashlib.blake2b(_ALG + self.key_id + sk, digest_size=32).digest()

    def to_file(self) -> str:
        body = (_ALG + _UNENCRYPTED + _CHK_ALG + bytes(32) + bytes(8) + bytes(8)
                + self.key_id + self.seed + self.public.raw + self._checksum())
        return f"untrusted comment: minisign unencrypted secret key\n{_b64(body)}\n"

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if len(lines) != 2 or not lines[0].startswith("untrusted comment:"):
            raise SignatureError("not a minisign secret key file")
        data = _unb64(lines[1], "secret key")
        if len(data) != 158 or data[:2] != _ALG or data[4:6] != _CHK_ALG:
            raise SignatureError("not a minisign Ed25519 secret key (wrong length or algorithm)")
        if data[2:4] == _SCRYPT:
            raise SignatureError("the secret key is password-protected; updaterd reads only "
                                 "unencrypted keys (`minisign -C -W` removes the password)")
        if data[2:4] != _UNENCRYPTED:
            raise SignatureError("unknown key derivation in the secret key")
        key_id, sk, chk = data[54:62], data[62:126], data[126:158]
        key = cls(key_id=key_id, seed=sk[:32])
        if key.public.raw != sk[32:]:
            raise SignatureError("the secret key is inconsistent (public half does not match)")
        if chk != bytes(32) and chk != key._checksum():
            raise SignatureError("the secret key checksum does not match")
        return key

    def sign(self, data: bytes, trusted_comment: str, prehashed: bool = True,
             untrusted_comment: str = "signature from updaterd secret key") -> str:
        """A detached `.minisig` text for `data`."""
        _validate_comment(trusted_comment)
        priv = _ed25519().Ed25519PrivateKey.from_private_bytes(self.seed)
        alg = _ALG_PREHASHED if prehashed else _ALG
        message = hashlib.blake2b(data, digest_size=64).digest() if prehashed else data
        sig = priv.sign(message)
        global_sig = priv.sign(sig + trusted_comment.encode("utf-8"))
        return (f"untrusted comment: {untrusted_comment}\n{_b64(alg + self.key_id + sig)}\n"
                f"trusted comment: {trusted_comment}\n{_b64(global_sig)}\n")


def _validate_comment(comment: str) -> None:
    if "\n" in comment or "\r" in comment or len(comment.encode()) > MAX_COMMENT:
        raise SignatureError("a trusted comment must be one line of at most 1024 bytes")


@dataclass(frozen=True)
class Verified:
    """What a good signature proves: which key signed, and the trusted comment."""

    key: PublicKey
    trusted_comment: str


MAX_SIGNATURES = 16  # signature blocks in one file (threshold signing)
MAX_SIGNATURE_FILE = 32 * 1024  # bytes read of a .minisig: MAX_SIGNATURES blocks, with room


def verify(data: bytes, signature: bytes, keys: list[PublicKey]) -> Verified:
    """Check a `.minisig` over `data` against any of `keys`; raises SignatureError on any fault."""
    return verify_threshold(data, signature, keys, 1, single=True)[0]


def verify_prehashed(prehash: bytes, signature: bytes, keys: list[PublicKey],
                     threshold: int = 1) -> list[Verified]:
    """Check a prehashed `.minisig` given the file's BLAKE2b-512 (computed while it arrived)."""
    return _verify_many(None, prehash, signature, keys, threshold)


def verify_threshold(data: bytes, signature: bytes, keys: list[PublicKey], threshold: int,
                     single: bool = False) -> list[Verified]:
    """Signatures over `data` by at least `threshold` distinct keys among `keys`.

    The file may hold several signature blocks one after the other (one per signer; the
    `minisign` tool reads the first). Keys count as distinct by their Ed25519 key, not by
    their ids, and a signature counts once however often it is repeated. Any malformed block
    fails the whole file; a block by a key we do not know is not counted.
    """
    return _verify_many(data, None, signature, keys, threshold, single)


@dataclass(frozen=True)
class _Block:
    alg: bytes
    key_id: bytes
    sig: bytes
    comment: str
    global_sig: bytes


def _blocks(signature: bytes) -> list[_Block]:
    """Parse every signature block; any malformed line fails the whole file."""
    try:
        text = signature.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("signature file is not UTF-8") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:"):
        raise SignatureError("malformed signature file (expected four lines)")
    if len(lines) % 4:
        raise SignatureError("malformed signature file (trailing content)")
    if len(lines) > 4 * MAX_SIGNATURES:
        raise SignatureError(f"more than {MAX_SIGNATURES} signatures in one file")
    return [_block(lines[i:i + 4]) for i in range(0, len(lines), 4)]


def _block(lines: list[str]) -> _Block:
    if not lines[0].startswith("untrusted comment:"):
        raise SignatureError("malformed signature file (trailing content)")
    sig_blob = _unb64(lines[1], "signature")
    if len(sig_blob) != 74:
        raise SignatureError("malformed signature (wrong length)")
    alg, key_id, sig = sig_blob[:2], sig_blob[2:10], sig_blob[10:]
    if alg not in (_ALG, _ALG_PREHASHED):
        raise SignatureError("unsupported signature algorithm")
    if not lines[2].startswith("trusted comment: "):
        raise SignatureError("malformed signature file (no trusted comment)")
    comment = lines[2][len("trusted comment: ") :]
    global_sig = _unb64(lines[3], "global signature")
    if len(global_sig) != 64:
        raise SignatureError("malformed global signature (wrong length)")
    return _Block(alg, key_id, sig, comment, global_sig)


def _verify_block(block: _Block, data: bytes | None, prehash: bytes | None,
           keys: list[PublicKey]) -> Verified:
    matching = [k for k in keys if k.key_id == block.key_id]
    if not matching:
        raise SignatureError(f"signed by unknown key {_key_id_hex(block.key_id)}")
    if block.alg == _ALG_PREHASHED:
        message = prehash if prehash is not None else \
            hashlib.blake2b(data or b"", digest_size=64).digest()
    elif data is not None:
        message = data
    else:
        raise SignatureError("legacy (not prehashed) signatures are not supported for "
                             "downloads; sign with minisign 0.11 or later")
    from cryptography.exceptions import InvalidSignature

    for key in matching:
        pub = _ed25519().Ed25519PublicKey.from_public_bytes(key.raw)
        try:
            pub.verify(block.sig, message)
            pub.verify(block.global_sig, block.sig + block.comment.encode("utf-8"))
        except InvalidSignature:
            continue
        return Verified(key=key, trusted_comment=block.comment)
    raise SignatureError(f"signature by key {_key_id_hex(block.key_id)} does not verify")


def valid_blocks(signature: bytes) -> bytes:
    """Only the blocks of a signature file that parse as minisign signatures (at most
    MAX_SIGNATURES), as text: what a publisher may carry over from an old file, never other
    bytes it held."""
    lines = [ln for ln in signature.decode("utf-8", "replace").splitlines() if ln.strip()]
    kept: list[str] = []
    i = 0
    while i + 4 <= len(lines) and len(kept) < 4 * MAX_SIGNATURES:
        try:
            _block(lines[i:i + 4])
        except SignatureError:
            i += 1
            continue
        kept += lines[i:i + 4]
        i += 4
    return "".join(line + "\n" for line in kept).encode()


def signer_ids(signature: bytes) -> list[str]:
    """The key ids (as minisign prints them) of every block of a signature file."""
    return [_key_id_hex(b.key_id) for b in _blocks(signature)]


def _verify_many(data: bytes | None, prehash: bytes | None, signature: bytes,
                 keys: list[PublicKey], threshold: int, single: bool = False) -> list[Verified]:
    blocks = _blocks(signature)
    if single and len(blocks) != 1:
        raise SignatureError("malformed signature file (trailing content)")
    by_key: dict[bytes, Verified] = {}
    refused: list[str] = []
    for block in blocks:
        try:
            verified = _verify_block(block, data, prehash, keys)
        except SignatureError as e:
            refused.append(str(e))
            continue
        by_key.setdefault(verified.key.raw, verified)
    if len(by_key) >= max(threshold, 1):
        return list(by_key.values())
    if threshold <= 1 and refused:
        raise SignatureError(refused[0])
    why = f" ({'; '.join(refused)})" if refused else ""
    raise SignatureError(f"signed by {len(by_key)} distinct trusted keys, {threshold} needed{why}")
