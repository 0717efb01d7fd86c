"""Process-group helpers: torchrun (env://) with gloo on CPU and nccl on GPU; a no-op for one process.

Kernels of the drifting loss never mix class groups, so the only cross-process coupling is through its two
batch-global normalisers (distance scale, force RMS). ``gather_groups`` concatenates every rank's groups so each
process computes the loss of the whole global batch with exactly the normalisers one process would compute;
gradients flow only through the local slice.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wants_cuda(device: str) -> bool:
    """A config's ``device`` (auto | cpu | cuda) -> whether to use CUDA; auto: when available."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {device!r}")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def init_from_env(use_cuda: bool | None = None) -> torch.device:
    """Join the torchrun process group if launched by torchrun (nccl with CUDA, gloo without); return this
    process's device. ``use_cuda`` None: CUDA when available."""
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def gather_groups(t: torch.Tensor) -> torch.Tensor:
    """(B_local, ...) on every rank -> (sum B_local, ...) in rank order; the local slice keeps its autograd graph.

    All ranks must hold the same B_local (the trainers give each rank the same number of groups).
    """
    rank, size = world()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank] = t
    return torch.cat(parts, 0)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (the frozen encoder is not wrapped in DDP)."""
    if world()[1] == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def all_mean(x: float, device) -> float:
    if world()[1] == 1:
        return float(x)
    t = torch.tensor(float(x), device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world()[1]
