"""Reading the checkpoints the training configs write (``CheckpointSaver`` dictionaries of state dicts).

Every checkpoint holds state dicts and plain numbers only, so it loads with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from monai_pso.errors import DataSourceError


def load_checkpoint(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)``, raising :class:`~monai_pso.errors.DataSourceError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(path, "checkpoint not found (train the bundle first, or pass its path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise DataSourceError(path, f"not a weights-only checkpoint ({type(error).__name__}: {error})") from None


def load_weights(module: torch.nn.Module, path: str | Path, key: str) -> torch.nn.Module:
    """Load ``checkpoint[key]`` into ``module`` and return it (for bundle configs).

    ``key`` names an entry of the ``CheckpointSaver`` ``save_dict`` (``"autoencoder"``, ``"unet"``,
    ``"ema"``); an EMA entry (``AveragedModel`` state) is unwrapped into the plain network.

    Examples
    --------
    >>> import tempfile, os
    >>> net = torch.nn.Linear(2, 2); path = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> torch.save({"unet": net.state_dict()}, path)
    >>> load_weights(torch.nn.Linear(2, 2), path, "unet").weight.shape
    torch.Size([2, 2])
    """
    checkpoint = load_checkpoint(path)
    if key not in checkpoint:
        raise DataSourceError(path, f"no {key!r} entry (has {', '.join(sorted(checkpoint))})")
    state = checkpoint[key]
    if any(name.startswith("module.") for name in state):  # AveragedModel / DDP state dict
        state = {name[len("module.") :]: value for name, value in state.items() if name.startswith("module.")}
    module.load_state_dict(state)
    return module


def read_scale_factor(path: str | Path, key: str = "trainer") -> float:
    """The latent scale factor a :class:`~monai_pso.engines.LatentDiffusionTrainer` stored in its checkpoint."""
    checkpoint = load_checkpoint(path)
    value = checkpoint.get(key, {}).get("scale_factor")
    if value is None:
        raise DataSourceError(path, f"no latent scale factor in its {key!r} entry")
    return float(value)
