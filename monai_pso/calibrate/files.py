"""Atomic JSON, shared by the threshold, the generation handler and the release.

Files that others read are written to a temporary name in the same folder and renamed into place
(:func:`monai_pso.embed.persistence.write_atomically`), so a crash leaves either the old file or the
new one, never half of one.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_json_atomic(path, {"tau": 1.5})
>>> json.loads(path.read_text())["tau"]
1.5
"""

from __future__ import annotations

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
