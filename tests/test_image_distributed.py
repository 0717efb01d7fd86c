"""Two gloo processes, each with half the class labels, take exactly the step one process takes on all of them."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from drifting_policy.image.encoders import LatentMAE
from drifting_policy.image.models import build_dit
from drifting_policy.image.train import train_step

CFG = OmegaConf.create({
    "method": "drifting", "seed": 0, "encoder": {"use_raw": True},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.01, "warmup": 1, "grad_clip": 2.0, "ema": 0.9},
    "train": {"bf16": False},
})  # fmt: skip


def global_batch():
    g = torch.Generator().manual_seed(3)
    G, Ng, Np, Nu = 4, 5, 6, 3
    return {
        "labels": torch.tensor([3, 0, 7, 5]), "alpha": torch.tensor([1.0, 1.5, 2.0, 3.5]),
        "noise": torch.randn(G, Ng, 1, 8, 8, generator=g), "style": torch.randint(0, 64, (G, Ng, 32), generator=g),
        "pos": torch.randn(G, Np, 1, 8, 8, generator=g) * 0.5 + 0.3, "neg": torch.randn(G, Nu, 1, 8, 8, generator=g),
        "neg_weight": torch.tensor([0.0, 0.5, 1.0, 2.5]) * (Ng - 1) / Nu,
    }  # fmt: skip


def build():
    torch.manual_seed(0)
    model = build_dit("N/2-test", 10, n_context=4)
    torch.manual_seed(1)
    encoder = LatentMAE(1, width=4, blocks=(2, 1)).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    return model, encoder, opt


def run_step(model, encoder, opt, batch):
    logs = train_step(model, opt, encoder, batch, CFG, step=0)
    inner = model.module if hasattr(model, "module") else model
    return logs["loss"], {k: v.detach().clone() for k, v in inner.state_dict().items()}


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, encoder, opt = build()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = {k: v[rank * 2 : rank * 2 + 2] for k, v in global_batch().items()}
        loss, params = run_step(ddp, encoder, opt, half)
        save_file({**params, "__loss": torch.tensor(loss)}, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_step_equals_one_process_step_on_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    model, encoder, opt = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss1, params1 = run_step(model, encoder, opt, global_batch())
    # fork: the children inherit the imported modules (spawn would re-import torch in each, ~10 s here)
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    moved = max((params1[k] - before[k]).abs().max().item() for k in before)
    assert moved > 1e-4  # the step really changed the weights
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert abs(got.pop("__loss").item() - loss1) < 1e-5
        for k, v in params1.items():
            torch.testing.assert_close(got[k], v, atol=1e-5, rtol=0, msg=f"rank {rank}, parameter {k}")
