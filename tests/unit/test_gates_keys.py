"""The local keys folder: private keys 0600 made once, never on object storage, rotation and revocation."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from factory.errors import InvalidInputError
from factory.gates import EnvelopeError, KeyRing, keyid_of, open_attestation
from factory.gates.keys import TRUST_FILE
from factory.settings import Settings, default_keys_dir

from gates_kit import T0, envelope


def test_first_use_makes_one_private_key_readable_only_by_its_owner(tmp_path):
    """A new signing key is written 0600 in a 0700 folder, trusted, and the same key comes back later."""
    keys = KeyRing(tmp_path / "keys")
    signer = keys.signer()
    file = tmp_path / "keys" / "attestation.key"
    assert file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert keys.signer().keyid == signer.keyid == keyid_of(signer.public_key)
    assert keys.trusted().get(signer.keyid).status == "active"


def test_two_processes_asking_at_once_get_the_same_key(tmp_path):
    """Processes racing to make the first key end up sharing one, not overwriting each other's."""
    code = "import sys; from factory.gates.keys import KeyRing; print(KeyRing(sys.argv[1]).signer().keyid)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "keys")], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    ids = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert len(ids) == 1 and all(p.returncode == 0 for p in procs)
    assert len(KeyRing(tmp_path / "keys").trusted()) == 1


def test_keys_never_go_to_object_storage():
    """FACTORY_KEYS pointing at a bucket is refused with a message saying to use a local folder."""
    with pytest.raises(InvalidInputError, match="local"):
        KeyRing("s3://bucket/keys")


def test_settings_default_to_the_user_config_folder(tmp_path):
    """Without FACTORY_KEYS the keys live under the user's config folder; with it, where it says."""
    assert Settings.from_env({"XDG_CONFIG_HOME": str(tmp_path)}).keys == str(tmp_path / "factory" / "keys")
    assert Settings.from_env({"FACTORY_KEYS": "/k"}).keys == "/k"
    assert default_keys_dir({"HOME": "/h"}).endswith(os.path.join(".config", "factory", "keys"))


def test_a_key_readable_by_others_is_refused(tmp_path):
    """A private key left group- or world-readable is not used until its mode is fixed."""
    keys = KeyRing(tmp_path / "keys")
    keys.signer()
    os.chmod(tmp_path / "keys" / "attestation.key", 0o644)
    with pytest.raises(InvalidInputError, match="chmod 600"):
        keys.signer()


def test_rotation_keeps_old_attestations_valid_and_new_ones_on_the_new_key(tmp_path):
    """After rotation, what the old key signed still verifies; the old key signing anew does not count."""
    now = [T0]
    keys = KeyRing(tmp_path / "keys", clock=lambda: now[0])
    old = keys.signer()
    before = envelope(old, at=T0 + timedelta(minutes=1))
    now[0] = T0 + timedelta(hours=1)
    new = keys.rotate()
    assert new.keyid != old.keyid
    trust = keys.trusted()
    assert trust.get(old.keyid).status == "retired"
    assert open_attestation(before.to_json(), trust).key.keyid == old.keyid
    assert open_attestation(envelope(new, at=T0 + timedelta(hours=2)).to_json(), trust).key.keyid == new.keyid
    with pytest.raises(EnvelopeError) as err:
        open_attestation(envelope(old, at=T0 + timedelta(hours=2)).to_json(), trust)
    assert err.value.kind == "retired-key"


def test_a_revoked_key_verifies_nothing(tmp_path):
    """Revoking a leaked key makes everything it signed fail, naming the revocation."""
    keys = KeyRing(tmp_path / "keys")
    signer = keys.signer()
    data = envelope(signer).to_json()
    keys.revoke(signer.keyid[:12])
    with pytest.raises(EnvelopeError, match="revoked") as err:
        open_attestation(data, keys.trusted())
    assert err.value.kind == "revoked-key"


def test_a_broken_trust_file_says_how_to_fix_it(tmp_path):
    """A damaged trusted.json is reported as such rather than trusting nothing silently."""
    keys = KeyRing(tmp_path / "keys")
    keys.signer()
    (tmp_path / "keys" / TRUST_FILE).write_text("{not json")
    with pytest.raises(InvalidInputError, match="trusted-keys file"):
        keys.trusted()
