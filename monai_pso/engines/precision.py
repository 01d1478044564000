"""Mixed precision for the generative engines: bf16 autocast where the device supports it, else fp32."""

from __future__ import annotations

import contextlib

import torch


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 autocast efficiently (a CUDA device with bf16 support).

    Examples
    --------
    >>> bf16_supported("cpu")
    False
    """
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_bf16(device: torch.device | str, bf16: bool | str = "auto") -> bool:
    """``"auto"``: bf16 where supported; ``True`` asks for it (still off where unsupported); ``False`` off."""
    if bf16 in (False, "false", "off", None):
        return False
    return bf16_supported(device)


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """A bf16 autocast context on ``device`` when ``enabled``, else a no-op context.

    Examples
    --------
    >>> with autocast("cpu", False):
    ...     y = torch.ones(2) * 2
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
