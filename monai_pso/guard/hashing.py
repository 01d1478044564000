"""Salted hashes of patient ids: audit logs say *which* patient an image was close to, never *who*.

The hash is ``sha256(salt + patient_id)`` in hex. The salt is random per release (32 bytes from
:mod:`secrets`) and is kept only in a private file that is never part of a release; with it, the data
owner can link a hash back to a patient (by hashing the candidate ids), without it nobody can, even
for patient ids that are easy to guess.

Examples
--------
>>> hasher = PatientHasher(b"fixed salt for the example")
>>> h = hasher("patient-007")
>>> len(h), h == hasher("patient-007"), h == PatientHasher(b"other salt")("patient-007")
(64, True, False)
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from monai_pso.errors import DataSourceError, MonaiPsoError

#: Bytes of a freshly drawn salt.
SALT_BYTES = 32


class PatientHasher:
    """Hash patient ids with a secret salt.

    Parameters
    ----------
    salt
        The secret salt (bytes, or a string encoded as UTF-8); ``None`` draws a random one that lives
        only in this object (hashes then cannot be linked back later).
    """

    def __init__(self, salt: bytes | str | None = None) -> None:
        if salt is None:
            salt = secrets.token_bytes(SALT_BYTES)
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        if not self._salt:
            raise MonaiPsoError("the salt of the patient hashes must not be empty")

    def __call__(self, patient_id: str) -> str:
        return hashlib.sha256(self._salt + str(patient_id).encode()).hexdigest()

    def __repr__(self) -> str:  # never show the salt
        return "PatientHasher(salt=<hidden>)"

    @classmethod
    def from_file(cls, path: str | Path, create: bool = True) -> PatientHasher:
        """The hasher whose salt is stored (hex) in ``path``; a new random salt is written there first
        (owner read/write only) when the file is absent and ``create`` is true."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise DataSourceError(path, "salt file not found")
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(handle, "w") as stream:
                stream.write(secrets.token_hex(SALT_BYTES) + "\n")
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except ValueError:
            raise DataSourceError(path, "salt file must hold one non-empty hex string") from None
