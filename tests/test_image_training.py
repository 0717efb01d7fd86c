"""Training on real small data (sklearn digits): samples move toward the data, resume is exact, the flow-matching
baseline trains on the same backbone, in-training evaluation writes metrics and a grid, and sampling reads the
checkpoint folders."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from drifting_policy.image.data import load_digits_tensor
from drifting_policy.image.encoders import LatentMAE
from drifting_policy.image.models import build_dit
from drifting_policy.image.sample import load_generator
from drifting_policy.image.train import build_everything, fill_queues, make_ema, step_batch, train, train_step
from drifting_policy.utils.checkpoint import update_state


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


def tensor_files(folder):
    """Every safetensors file below a checkpoint folder, by relative path."""
    return {str(p.relative_to(folder)): load_file(str(p)) for p in sorted(folder.rglob("*.safetensors"))}


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    straight = train(digits_cfg(tmp_path / "a"))
    train(digits_cfg(tmp_path / "b", train={"steps": 2}))
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # as if a crash came after logging step 3, before its save
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    resumed = train(digits_cfg(tmp_path / "b"))  # picks up checkpoints/step_00000002 and runs steps 2..3
    a, b = (run / "checkpoints" / "step_00000004" for run in (straight, resumed))
    assert (resumed / "checkpoints" / "last").resolve() == b
    files = tensor_files(a)
    # model, EMA, optimizer, global RNG and this rank's queues + data stream: all bit-identical
    assert set(files) == {"model.safetensors", "ema.safetensors", "training_state/optimizer.safetensors",
                          "training_state/rng.safetensors", "training_state/rank0.safetensors"}
    assert files.keys() == tensor_files(b).keys()
    for name, tensors in tensor_files(b).items():
        assert tensors.keys() == files[name].keys()
        assert all(torch.equal(files[name][k], tensors[k]) for k in tensors), name
    # nothing that needs unpickling or executing: tensors, JSON and the YAML config only
    assert {p.suffix for p in b.rglob("*") if p.is_file()} == {".safetensors", ".json", ".yaml"}
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["loss"] >= 0 for r in log)


def test_resume_refuses_another_world_size_and_a_fresh_run_over_an_old_one(tmp_path):
    run = train(digits_cfg(tmp_path, train={"steps": 2}))
    update_state(run / "checkpoints" / "step_00000002", world_size=2)  # as if two processes had written it
    with pytest.raises(ValueError, match=r"step_00000002/training_state/state.json: world_size 2, but this run has 1"):
        train(digits_cfg(tmp_path))
    with pytest.raises(FileExistsError, match="train.resume=false"):
        train(digits_cfg(tmp_path, train={"resume": False}))
    update_state(run / "checkpoints" / "step_00000002", world_size=1)
    with pytest.raises(ValueError, match=r"in what it trains: \['optim.lr: "):
        train(digits_cfg(tmp_path, optim={"lr": 1e-2}))


def test_sampling_loads_the_ema_weights_of_the_newest_checkpoint(tmp_path):
    run = train(digits_cfg(tmp_path, train={"steps": 2, "ckpt_every": 1}))
    folder = run / "checkpoints" / "step_00000002"
    for path in (run, run / "checkpoints", folder):
        model, cfg, found = load_generator(path)
        assert found == folder.resolve() and cfg.model.size == "N/2-test"
        ema = load_file(str(folder / "ema.safetensors"))
        assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    raw, _, _ = load_generator(folder, "model")
    assert any(not torch.equal(v, ema[k]) for k, v in raw.state_dict().items())  # EMA and raw weights differ
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_generator(tmp_path / "nothing")


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
def test_ema_schedules_follow_their_recurrence(tmp_path, warmup):
    """The first update copies the weights; then decay optim.ema ("constant") or min(optim.ema, k / (9 + k)) at the
    k-th update ("rampup", optim.ema_warmup), i.e. (1 + t) / (10 + t) at step t. With the constant 0.999 the EMA
    after a few steps is still the first step's weights; the ramp follows the model."""
    cfg = digits_cfg(tmp_path, optim={"ema": 0.999, "ema_warmup": warmup})
    model, _, source, cq, gq, opt = build_everything(cfg, torch.device("cpu"))
    fill_queues(source, cq, gq, 8, 64)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema, steps = make_ema(cfg, model), []
    for step in range(5):
        train_step(model, opt, None, step_batch(cfg, step, model, cq, gq, torch.device("cpu")), cfg, step, ema)
        steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    want = steps[0]
    for t, now in enumerate(steps[1:], start=1):
        decay = min(0.999, (1 + t) / (10 + t)) if warmup else 0.999
        want = {k: decay * want[k] + (1 - decay) * now[k] for k in now}
    got = ema.sync(model).state_dict()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)

    def dist(a, b):
        return sum((a[k] - b[k]).norm() ** 2 for k in a) ** 0.5

    moved = dist(steps[-1], init)
    assert moved > 0
    assert dist(steps[-1], got) < 0.7 * moved if warmup else dist(got, steps[0]) < 0.01 * moved


def test_everything_the_image_models_keep_is_a_parameter():
    """The EMA averages parameters only: the generator's buffers (RoPE tables, style offsets, frequencies) are
    constants rebuilt at construction and never saved; the encoder has none."""
    dit = build_dit("N/2-test", 10, n_context=4, time_conditioned=True)
    assert set(dit.state_dict()) == {name for name, _ in dit.named_parameters()}
    assert list(LatentMAE(1, width=4, blocks=(1, 1), num_classes=10).buffers()) == []
