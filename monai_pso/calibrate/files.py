"""Small file helpers shared by the threshold, the gate and its release: atomic JSON and digests.

Files that others read are written to a temporary name in the same folder and renamed into place
(:func:`monai_pso.embed.persistence.write_atomically`), so a crash leaves either the old file or the
new one, never half of one.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_json_atomic(path, {"tau": 1.5})
>>> json.loads(path.read_text())["tau"], len(sha256_file(path))
(1.5, 64)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from monai_pso.embed.persistence import write_atomically


def write_json_atomic(path: str | Path, content: Any) -> None:
    """Write ``content`` as indented JSON (keys sorted, no NaN) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomically(path, lambda stream: stream.write(text.encode()))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
