"""CUDA IPC hand-off: a tensor on a GPU crosses to another process on the same GPU as a handle, not as bytes.

When CFM and HiFiGAN share one GPU, a mel chunk made on the device would otherwise be copied to
host memory (a device -> host copy is a stream synchronisation of the producer), framed as bytes,
and copied back to the same device by the consumer. With `cuda_ipc` on, the producer exports the
chunk's memory with torch's CUDA tensor sharing (the mechanism `torch.multiprocessing` uses:
`cudaIpcGetMemHandle` plus torch's reference counting, so the producer's caching allocator keeps
the block alive until the consumer has released it) and the consumer maps it and copies it into
its own memory. No host round trip and no producer-side sync: the consumer waits on the
producer's CUDA event recorded at export.

On the wire this is one optional header field of the `mel` message, `cuda` (ipc/schema.py): a
map of plain values (ints, bytes, a dtype name) from `share`; the tensor frame is then empty
([80, 0]) and the frame count is the shared tensor's. Every other message, and every hand-off
between devices or hosts, keeps the byte frames. Whether it is worth keeping is measured by
benchmarks/gpu_check.sh (the `ipc` section: per-chunk hand-off time, bytes vs handle); see docs/gpu.md.

Rules: export only tensors on a CUDA device; a consumer must `receive` every handle it decodes
(also for a request it drops), or the producer's block stays held; the shared memory is never
written after export (the producer exports a fresh, contiguous copy).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

FIELDS = ("device", "handle", "storage_bytes", "storage_offset", "ref_handle", "ref_offset", "event", "event_sync",
          "dtype", "shape", "stride", "offset")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def share(t: torch.Tensor) -> dict[str, Any]:
    """Export a CUDA tensor as a map of plain values (MessagePack-able). The tensor is copied first (contiguous,
    owned by the export), so the caller may reuse or free its own."""
    if not isinstance(t, torch.Tensor) or t.device.type != "cuda":
        raise ValueError(f"cuda_ipc: only a CUDA tensor can be shared, got {getattr(t, 'device', type(t).__name__)}")
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cuda_ipc: dtype {name} is not shareable (allowed: {', '.join(DTYPES)})")
    t = t.detach().clone(memory_format=torch.contiguous_format)
    storage = t.untyped_storage()
    device, handle, size, offset, ref_handle, ref_offset, event, event_sync = storage._share_cuda_()
    return {"device": int(device), "handle": bytes(handle), "storage_bytes": int(size), "storage_offset": int(offset),
            "ref_handle": bytes(ref_handle), "ref_offset": int(ref_offset), "event": bytes(event) if event else b"",
            "event_sync": bool(event_sync), "dtype": name, "shape": list(t.shape), "stride": list(t.stride()),
            "offset": int(t.storage_offset())}


def check(h: Any) -> None:
    """Validate a decoded handle map (types only; the driver checks the handle itself). Raises ValueError."""
    if not isinstance(h, Mapping) or set(h) != set(FIELDS):
        raise ValueError(f"cuda_ipc: a handle needs exactly the fields {', '.join(FIELDS)}")
    for k in ("handle", "ref_handle", "event"):
        if not isinstance(h[k], bytes):
            raise ValueError(f"cuda_ipc: field {k!r} must be bytes")
    for k in ("device", "storage_bytes", "storage_offset", "ref_offset", "offset"):
        if not isinstance(h[k], int) or isinstance(h[k], bool) or h[k] < 0:
            raise ValueError(f"cuda_ipc: field {k!r} must be a non-negative integer")
    if h["dtype"] not in DTYPES:
        raise ValueError(f"cuda_ipc: dtype {h['dtype']!r} not allowed (allowed: {', '.join(DTYPES)})")
    for k in ("shape", "stride"):
        if not isinstance(h[k], list) or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in h[k]):
            raise ValueError(f"cuda_ipc: field {k!r} must be a list of non-negative integers")


def shape_of(h: Mapping[str, Any]) -> tuple[int, ...]:
    check(h)
    return tuple(h["shape"])


def receive(h: Mapping[str, Any], device: torch.device | str | None = None) -> torch.Tensor:
    """Map a handle from another process and copy it into this process's memory (on `device`, default the
    handle's); the mapping is released at once, so the producer's block is freed."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    check(h)
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_ipc: a CUDA handle arrived but this process has no CUDA device")
    dtype = DTYPES[h["dtype"]]
    shared = rebuild_cuda_tensor(torch.Tensor, torch.Size(h["shape"]), tuple(h["stride"]), h["offset"],
                                 torch.storage.TypedStorage, dtype, h["device"], h["handle"], h["storage_bytes"],
                                 h["storage_offset"], False, h["ref_handle"], h["ref_offset"], h["event"],
                                 h["event_sync"])
    target = torch.device(device) if device is not None else shared.device
    out = shared.to(target, copy=True)  # [shape] our own copy, on the current stream (after the producer's event)
    del shared  # releases the producer's reference count
    return out
