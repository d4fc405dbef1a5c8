"""Mixed precision on the CPU for engines whose own ``amp`` is CUDA-only: an inferer that runs the network under
``torch.autocast`` (bf16 by default), optionally in channels-last layout, and hands back float32 outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "cpu_bf16_supported"]


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX; read from ``/proc/cpuinfo`` on Linux, else
    oneDNN's own check). Without it oneDNN emulates bf16, which is slower than float32 (measured: see
    docs/performance.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        flags = None
    if flags is not None:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _to_float(output: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of ``output`` (a tensor, or lists / tuples / dicts of them) cast to ``dtype``."""
    if isinstance(output, torch.Tensor):
        return output.to(dtype) if output.is_floating_point() and output.dtype != dtype else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float(o, dtype) for o in output)
    if isinstance(output, dict):
        return {k: _to_float(v, dtype) for k, v in output.items()}
    return output


class AutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast(device_type, dtype)`` when the input lies on ``device_type``.

    MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` autocast only on CUDA (``amp``); this wrapper gives their
    forward passes bf16 autocast on the CPU. Only the forward pass is autocast: the outputs come back in the input's
    floating dtype (float32), so the loss, the backward pass's final reductions and the optimiser step stay in
    float32, as with CUDA amp. With ``channels_last`` the network (once) and 4D inputs are put in channels-last
    layout, the layout oneDNN's bf16 convolutions run fastest in. Inputs on another device pass through unchanged
    (a GPU run keeps the engine's own ``amp``).

    Args:
        inferer: the inferer to wrap (``SimpleInferer``, ``SliceOrImageInferer``, ...).
        enabled: autocast at all (bundles pass ``amp`` and the device).
        device_type: the device type to autocast on.
        dtype: the autocast dtype (bf16: float32's range, no gradient scaling needed).
        channels_last: channels-last layout of network and 4D inputs while enabled.
    """

    def __init__(
        self,
        inferer: Callable[..., Any],
        enabled: bool = True,
        device_type: str = "cpu",
        dtype: torch.dtype | str = torch.bfloat16,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.enabled = bool(enabled)
        self.device_type = device_type
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.channels_last = channels_last
        self._laid_out: set[int] = set()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """inputs: ``(B, C, ...)``; returns ``inferer(inputs, network)``, floating outputs in the input dtype."""
        if not self.enabled or inputs.device.type != self.device_type:
            return self.inferer(inputs, network, *args, **kwargs)
        if self.channels_last and inputs.ndim == 4:
            if isinstance(network, torch.nn.Module) and id(network) not in self._laid_out:
                network.to(memory_format=torch.channels_last)
                self._laid_out.add(id(network))
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float(output, inputs.dtype if inputs.is_floating_point() else torch.float32)
