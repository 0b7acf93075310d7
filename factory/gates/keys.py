"""Signing keys in a local folder, and the set of public keys trusted to verify.

The folder (``Settings.keys``, ``FACTORY_KEYS``, by default ``~/.config/factory/keys``)
is local by design: private keys never go to object storage, and a URI is refused.
It holds ``<name>.key`` (an Ed25519 private key, PKCS#8 PEM, mode 0600, made on first
use) and ``trusted.json``, the public keys that verification accepts. A key id is the
lowercase hex SHA-256 of the raw 32-byte Ed25519 public key (RFC 8032 encoding, not
SPKI DER), everywhere: DSSE signatures, the trust file, reports.

Rotation makes a new key under the same name and marks the old one *retired*: its
private key is deleted, but its public key stays trusted for what it signed before it
was retired, so old attestations still verify and new ones must carry the new key.
A *revoked* key verifies nothing. Every change to the folder happens under an
exclusive ``flock`` and lands by rename, so two processes asking for a key that does
not exist yet end up with the same one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from factory.errors import InvalidInputError, NotFoundError
from factory.settings import Settings, default_keys_dir

__all__ = ["KeyRing", "Signer", "TrustedKey", "TrustedKeys", "keyid_of", "TRUST_FILE"]

TRUST_FILE = "trusted.json"
_TRUST_FORMAT = "factory.trusted-keys/v1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
Status = Literal["active", "retired", "revoked"]


def keyid_of(public_key: bytes) -> str:
    """The key id: hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidInputError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    return hashlib.sha256(public_key).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"{name!r} is not a key name: use lowercase letters, digits, '.', '_' and '-' (e.g. 'attestation')"
        )
    return name


@functools.lru_cache(maxsize=1024)
def _public_key(raw: bytes):
    """The parsed key, kept: parsing costs a sizeable share of one verification."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TrustedKey:
    """A public key that verification accepts, with its history."""

    keyid: str
    name: str
    public_key: bytes
    status: Status
    added_at: datetime
    retired_at: datetime | None = None
    revoked_at: datetime | None = None

    def to_dict(self) -> dict:
        return {
            "keyid": self.keyid,
            "name": self.name,
            "public_key": base64.b64encode(self.public_key).decode(),
            "status": self.status,
            "added_at": self.added_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> TrustedKey:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        public = base64.b64decode(data["public_key"], validate=True)
        key = cls(keyid_of(public), data["name"], public, data["status"], datetime.fromisoformat(data["added_at"]),
                  when(data.get("retired_at")), when(data.get("revoked_at")))
        if key.keyid != data["keyid"] or key.status not in ("active", "retired", "revoked"):
            raise ValueError(f"entry {data['keyid']!r} does not match its public key or has status {key.status!r}")
        return key

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``data`` (status not considered)."""
        from cryptography.exceptions import InvalidSignature

        try:
            _public_key(self.public_key).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def accepts(self, signed_at: datetime | None) -> str | None:
        """Why a signature by this key made at ``signed_at`` does not count, or ``None`` if it does."""
        if self.status == "revoked":
            return f"key {self.keyid[:16]} ({self.name}) was revoked at {self.revoked_at:%Y-%m-%d %H:%M:%S}"
        if self.status == "retired" and self.retired_at is not None and signed_at is not None:
            if signed_at > self.retired_at:
                return (f"key {self.keyid[:16]} ({self.name}) was retired at {self.retired_at:%Y-%m-%d %H:%M:%S} "
                        f"but signed at {signed_at:%Y-%m-%d %H:%M:%S}")
        return None


@dataclass(frozen=True)
class TrustedKeys:
    """The trusted public keys, by key id. Plain data: it travels to worker processes as JSON."""

    keys: Mapping[str, TrustedKey]

    def get(self, keyid: str) -> TrustedKey | None:
        return self.keys.get(keyid)

    def __contains__(self, keyid: object) -> bool:
        return keyid in self.keys

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self.keys.values())

    def __len__(self) -> int:
        return len(self.keys)

    def usable(self) -> frozenset[str]:
        """Key ids that are not revoked."""
        return frozenset(k for k, v in self.keys.items() if v.status != "revoked")

    @classmethod
    def of(cls, *keys: TrustedKey) -> TrustedKeys:
        return cls({k.keyid: k for k in keys})


class Signer:
    """An Ed25519 private key with its name and key id. Never leaves the process."""

    def __init__(self, name: str, private_key: object):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.name = name
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.keyid = keyid_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def trusted(self, *, at: datetime | None = None) -> TrustedKey:
        """This key as an active trusted key (for tests and single-key setups)."""
        return TrustedKey(self.keyid, self.name, self.public_key, "active", at or _now())

    def __reduce__(self):  # a private key must not travel by pickle, to Ray workers or anywhere
        raise TypeError("a Signer holds a private key and cannot be pickled: open the KeyRing where you sign")

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, keyid={self.keyid[:16]})"


def _pem(private_key: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


class KeyRing:
    """The local keys folder: signing keys by name and the trusted public keys."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], datetime] | None = None):
        text = os.fspath(path)
        if "://" in text:
            raise InvalidInputError(
                f"signing keys must stay on a local disk, not at {text}: set FACTORY_KEYS to a local folder "
                "(object storage is never used for private keys)"
            )
        self.path = Path(text).expanduser()
        self._clock = clock or _now

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs) -> KeyRing:
        settings = settings or Settings.from_env()
        return cls(settings.keys or default_keys_dir(), **kwargs)

    # -- the folder ----------------------------------------------------------------
    def _ensure_dir(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir()
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, name: str, data: bytes, mode: int) -> None:
        """Write a file in the folder atomically (temporary file, then rename), created with ``mode``."""
        target = self.path / name
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _key_file(self, name: str) -> Path:
        return self.path / f"{_check_name(name)}.key"

    def _read_trust(self) -> dict[str, TrustedKey]:
        file = self.path / TRUST_FILE
        if not file.exists():
            return {}
        try:
            data = json.loads(file.read_text())
            if data.get("format") != _TRUST_FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            keys = [TrustedKey.from_dict(k) for k in data["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"{file} is not a trusted-keys file ({exc}): restore it from a backup or remove the broken entry"
            ) from None
        return {k.keyid: k for k in keys}

    def _write_trust(self, keys: Mapping[str, TrustedKey]) -> None:
        body = {"format": _TRUST_FORMAT, "keys": [k.to_dict() for k in sorted(keys.values(), key=lambda k: k.added_at)]}
        self._write(TRUST_FILE, (json.dumps(body, indent=2) + "\n").encode(), 0o644)

    def _load(self, name: str) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        file = self._key_file(name)
        mode = file.stat().st_mode & 0o777
        if mode & 0o077:
            raise InvalidInputError(
                f"{file} is readable by others (mode {mode:o}): run 'chmod 600 {file}' so only you can read it"
            )
        key = load_pem_private_key(file.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInputError(f"{file} is not an Ed25519 private key: move it away and let factory make one")
        return Signer(name, key)

    # -- signing keys --------------------------------------------------------------
    def signer(self, name: str = "attestation") -> Signer:
        """The signing key ``name``, made (and trusted) on first use."""
        file = self._key_file(name)
        if file.exists():
            return self._load(name)
        with self._locked():
            if not file.exists():  # another process may have made it while we waited for the lock
                self._create(name)
        return self._load(name)

    def _create(self, name: str) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        signer = Signer(name, key)
        trust = self._read_trust()
        trust[signer.keyid] = signer.trusted(at=self._clock())
        self._write_trust(trust)  # trusted first: a crash in between leaves a trusted key with no private half
        self._write(f"{name}.key", _pem(key), 0o600)

    def rotate(self, name: str = "attestation") -> Signer:
        """Replace the signing key ``name``: the old one is retired (still verifies what it signed), a new one signs."""
        with self._locked():
            trust = self._read_trust()
            file = self._key_file(name)
            if file.exists():
                old = self._load(name)
                entry = trust.get(old.keyid)
                if entry is not None and entry.status == "active":
                    trust[old.keyid] = replace(entry, status="retired", retired_at=self._clock())
                    self._write_trust(trust)
                file.unlink()
            self._create(name)
        return self._load(name)

    # -- trusted keys --------------------------------------------------------------
    def trusted(self) -> TrustedKeys:
        """The trusted public keys (active, retired and revoked, each with its status)."""
        return TrustedKeys(self._read_trust())

    def trust(self, public_key: bytes | str, name: str) -> TrustedKey:
        """Trust another signer's Ed25519 public key (raw 32 bytes, or their base64)."""
        raw = base64.b64decode(public_key, validate=True) if isinstance(public_key, str) else public_key
        keyid = keyid_of(raw)
        with self._locked():
            trust = self._read_trust()
            if keyid not in trust:
                trust[keyid] = TrustedKey(keyid, _check_name(name), raw, "active", self._clock())
                self._write_trust(trust)
            return trust[keyid]

    def revoke(self, keyid: str) -> TrustedKey:
        """Stop trusting a key for anything, past signatures included (for a leaked key)."""
        with self._locked():
            trust = self._read_trust()
            matches = [k for k in trust if k.startswith(keyid)] if len(keyid) >= 8 else []
            if len(matches) != 1:
                raise NotFoundError(f"no single trusted key matches {keyid!r}: give at least 8 characters of a "
                                    f"key id from {self.path / TRUST_FILE}")
            entry = replace(trust[matches[0]], status="revoked", revoked_at=self._clock())
            trust[entry.keyid] = entry
            self._write_trust(trust)
            return entry
