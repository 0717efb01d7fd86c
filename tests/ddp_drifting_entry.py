"""torchrun entry for the DDP-equivalence test: each of 2 processes takes its half of a fixed global batch, computes
the drifting loss through DDP and backward; rank 0 writes the loss and the averaged gradients (argv[2])."""

import sys

import torch
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from drifting_policy.utils.distributed import init_from_env, world

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_training import ddp_case  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_env(use_cuda=False)
    rank, size = world()
    policy, batch = ddp_case()
    half = batch["action"].shape[0] // size
    local = {"obs": {k: v[rank * half:(rank + 1) * half] for k, v in batch["obs"].items()},
             "action": batch["action"][rank * half:(rank + 1) * half], "noise": batch["noise"][rank * half:(rank + 1) * half]}
    model = DistributedDataParallel(policy)
    loss, _ = model(local)
    loss.backward()
    if rank == 0:
        grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
        save_file(grads | {"__loss__": (loss.detach() / size).reshape(1)}, sys.argv[1])
    torch.distributed.barrier()
