"""Count host reads of tensor values (the device-to-host syncs of a GPU run), on any device.

``torch.cuda.set_sync_debug_mode`` only sees CUDA. :func:`count_host_reads` patches the Python
entry points through which a value reaches the host (``item``, ``__bool__``, ``__float__``,
``__int__``, ``__index__``, ``tolist``, ``numpy``, ``cpu``) and records each read with the
device of the tensor read. With ``dummy_meta=True`` a read of a tensor on the "meta" device
(shapes only, no values) is recorded and answered with a dummy (``True``, 1 or 1.0) instead of
raising: running a sampler with its state on "meta" then counts exactly the reads that would be
device-to-host syncs on a GPU (the sigma grid stays a CPU tensor), on a machine without one. It
sees reads made from Python; a read inside a C++ op (e.g. ``torch.nonzero``'s output size) is not
counted, and ``torch.cuda.set_sync_debug_mode`` is the check for those on a GPU.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")


class HostReads:
    """The reads seen inside :func:`count_host_reads`: ``(method, device type) -> count``."""

    def __init__(self) -> None:
        self.by_kind: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def on(self, device_type: str) -> int:
        """Reads of tensors living on ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
        return sum(n for (_, dev), n in self.by_kind.items() if dev == device_type)

    def __repr__(self) -> str:
        return f"HostReads({dict(self.by_kind)})"


_lock = threading.RLock()


def _dummy_value(t: torch.Tensor) -> Any:
    return True if t.dtype == torch.bool else (1.0 if t.is_floating_point() else 1)


def _zeros_list(shape: tuple[int, ...]) -> Any:
    """Nested lists of 0.0 shaped like ``shape`` (a meta tensor's ``tolist``: healthy values, e.g. guard ratios of 0)."""
    return 0.0 if not shape else [_zeros_list(shape[1:]) for _ in range(shape[0])]


_DUMMY = {"item": _dummy_value, "__bool__": lambda t: True, "__float__": lambda t: 1.0, "__int__": lambda t: 1,
          "__index__": lambda t: 1, "tolist": lambda t: _zeros_list(tuple(t.shape))}


@contextmanager
def count_host_reads(ignore: Callable[[torch.Tensor], bool] | None = None, dummy_meta: bool = False) -> Iterator[HostReads]:
    """Within the block, count every read of a tensor's values by the host (outermost call only);
    reads of tensors for which ``ignore(tensor)`` is true are not counted."""
    reads = HostReads()
    depth = threading.local()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, fn: Any) -> Any:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            outer = getattr(depth, "n", 0) == 0
            if outer and not (ignore is not None and ignore(self)):
                reads.by_kind[(name, self.device.type)] += 1
            if dummy_meta and self.device.type == "meta" and name in _DUMMY:
                return _DUMMY[name](self)
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return fn(self, *args, **kwargs)
            finally:
                depth.n -= 1

        return counted

    with _lock:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        try:
            yield reads
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)
