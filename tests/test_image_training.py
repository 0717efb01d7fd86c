"""Training on real small data (sklearn digits): samples move toward the data, resume is exact, the flow-matching
baseline trains on the same backbone, and in-training evaluation writes metrics and a grid."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from drifting_policy.image.data import load_digits_tensor
from drifting_policy.image.train import build_everything, fill_queues, step_batch, train, train_step


def digits_cfg(out_dir, **over):
    cfg = OmegaConf.create({
        "method": "drifting", "seed": 0, "out_dir": str(out_dir),
        "data": {"kind": "digits", "image_size": 8, "channels": 1, "num_classes": 10, "push_per_step": 64},
        "model": {"size": "N/2-test", "n_context": 4},
        "drift": {"classes_per_step": 10, "n_gen": 8, "n_pos": 8, "n_unc": 4, "class_queue": 32,
                  "global_queue": 100, "alpha_power": 3, "alpha_max": 4.0},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.0, "warmup": 5, "grad_clip": 2.0, "ema": 0.9},
        "train": {"steps": 4, "log_every": 1, "ckpt_every": 2, "bf16": False, "resume": True},
    })  # fmt: skip
    return OmegaConf.merge(cfg, OmegaConf.create(over))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def nearest_same_class_distance(model, noise, style, labels, x, y):
    with torch.no_grad():
        out = model(noise, labels, torch.ones(len(labels)), style).flatten(1)
    d = torch.cdist(out, x.flatten(1)) + 1e9 * (labels[:, None] != y[None]).float()
    return d.min(1).values.mean().item()


def test_drifting_steps_on_digits_move_samples_toward_their_class(tmp_path):
    cfg = digits_cfg(tmp_path)
    model, _, source, cq, gq, opt = build_everything(cfg, torch.device("cpu"))
    fill_queues(source, cq, gq, 8, 64)
    x, y = load_digits_tensor()
    noise, style = model.random_inputs(100, torch.Generator().manual_seed(9))
    labels = torch.arange(10).repeat_interleave(10)
    before = nearest_same_class_distance(model, noise, style, labels, x, y)
    for step in range(20):
        xb, yb = source.next(64)
        cq.push(xb, yb)
        gq.push(xb)
        logs = train_step(model, opt, None, step_batch(cfg, step, model, cq, gq, torch.device("cpu")), cfg, step)
    after = nearest_same_class_distance(model, noise, style, labels, x, y)
    assert after < 0.8 * before, (before, after)
    assert {"loss/raw/flat", "loss/raw/rms", "force_rms/0.02"} <= set(logs)


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    straight = train(digits_cfg(tmp_path / "a"))
    train(digits_cfg(tmp_path / "b", train={"steps": 2}))
    resumed = train(digits_cfg(tmp_path / "b"))  # picks up ckpt/step_2 and runs steps 2..3
    for name in ("model", "ema", "optim"):
        a = load_file(str(straight / "ckpt" / "step_00000004" / f"{name}.safetensors"))
        b = load_file(str(resumed / "ckpt" / "step_00000004" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_flow_matching_baseline_trains_on_the_same_backbone_and_evaluates(tmp_path):
    from drifting_policy.image.classifier import train_classifier

    x, y = load_digits_tensor()
    train_classifier(x, y, 10, steps=20, batch=32, out_dir=str(tmp_path / "clf"))
    cfg = digits_cfg(tmp_path / "fm", method="flow_matching", train={"steps": 2},
                     eval={"every": 2, "classifier": str(tmp_path / "clf"), "n_per_class": 4, "cfg_scale": 1.0,
                           "nfe": [1, 3]})  # fmt: skip
    run = train(cfg)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    metrics = rows[-1]
    assert {"eval_nfe1/frechet", "eval_nfe3/frechet", "eval_nfe3/accuracy", "eval_nfe1/kid_x1000"} <= set(metrics)
    assert (run / "samples" / "step_00000002_nfe3.png").exists()


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_warmup_tracks_the_weights_early(tmp_path, warmup):
    """With a constant decay the EMA after a few steps is still the initial weights; the warmup follows the model."""
    cfg = digits_cfg(tmp_path, optim={"ema": 0.999, "ema_warmup": warmup})
    model, _, source, cq, gq, opt = build_everything(cfg, torch.device("cpu"))
    fill_queues(source, cq, gq, 8, 64)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema = {k: v.clone() for k, v in init.items()}
    for step in range(5):
        train_step(model, opt, None, step_batch(cfg, step, model, cq, gq, torch.device("cpu")), cfg, step, ema)
    now = model.state_dict()
    moved = sum((now[k] - init[k]).norm() ** 2 for k in init) ** 0.5
    lag = sum((now[k] - ema[k]).norm() ** 2 for k in init) ** 0.5
    assert moved > 0
    assert (lag < 0.7 * moved) if warmup else (lag > 0.99 * moved)
