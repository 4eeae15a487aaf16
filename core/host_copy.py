"""Reading small device tensors on the host without making the host wait for the device.

`tensor.item()` on a CUDA tensor blocks the host until every kernel queued before it has run, so
the next step's kernels are launched only after the device has gone idle. `HostCopy` instead queues
a copy into pinned host memory behind those kernels and records an event; the host reads the value
later, once `ready()` says the copy has landed (by then the device has long moved on).
"""

from __future__ import annotations

import torch


class HostCopy:
    """A non-blocking copy of `tensor` (detached) into host memory, readable once `ready()`."""

    waits = 0  # times `result()` had to wait for the device, over the process's life (for benchmarks)

    def __init__(self, tensor: torch.Tensor) -> None:
        source = tensor.detach()
        self.event: torch.cuda.Event | None = None
        if source.device.type == "cuda":
            self.host = torch.empty(source.shape, dtype=source.dtype, pin_memory=True)
            self.host.copy_(source, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(source.device))
        else:  # a CPU tensor is on the host already; other devices (MPS, XLA) copy synchronously
            self.host = torch.empty(source.shape, dtype=source.dtype)
            self.host.copy_(source, non_blocking=source.device.type == "cpu")

    def ready(self) -> bool:
        """Whether the copy has landed, so that `result()` returns without waiting."""
        return self.event is None or self.event.query()

    def result(self) -> torch.Tensor:
        """The host tensor, waiting for the copy if it has not landed yet (counted in `HostCopy.waits`)."""
        if not self.ready():
            HostCopy.waits += 1
            self.event.synchronize()
        return self.host
