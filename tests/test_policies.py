"""Both heads share encoder, backbone and normaliser; each learns a fixed batch and predicts in action units."""

import numpy as np
import pytest
import torch

from drifting_policy.policies import policy_class
from drifting_policy.policies.drifting import knn_positive_indices, knn_with_distances, neighbour_weights

STATE_META = {"obs": {"obs": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [2]}}
VISUAL_META = {"obs": {"image": {"shape": [3, 24, 24], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
               "action": {"shape": [2]}}


def make_policy(name, meta=STATE_META, **kw):
    torch.manual_seed(0)
    policy = policy_class(name)(meta, n_obs_steps=2, n_action_steps=4, horizon=8, down_dims=(16, 32), **kw)
    rng = np.random.default_rng(0)
    low = {k: rng.normal(size=(50, m["shape"][0])) for k, m in meta["obs"].items() if m["type"] == "low_dim"}
    policy.normalizer.fit(low | {"action": rng.uniform(100, 400, size=(50, 2))})
    return policy


def train_steps(policy, batch, n=60, lr=3e-3):
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(n):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()


def make_batch(meta=STATE_META, batch=16):
    g = torch.Generator().manual_seed(1)
    obs = {}
    for k, m in meta["obs"].items():
        shape = (batch, 2, *m["shape"])
        obs[k] = torch.rand(shape, generator=g) if m["type"] == "rgb" else torch.randn(shape, generator=g)
    action = 250 + 100 * torch.tanh(obs[next(k for k, m in meta["obs"].items() if m["type"] == "low_dim")][:, :1, :2])
    return {"obs": obs, "action": action.expand(batch, 8, 2).contiguous()}


@pytest.mark.parametrize("name", ["drifting", "diffusion", "bc"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(name):
    policy, batch = make_policy(name), make_batch()
    if name == "drifting":  # the drifting loss sits near a constant by design; its progress is the MSE to the demo
        measure = lambda: policy.compute_loss(batch)[1]["mse_to_demo"]  # noqa: E731
    else:
        measure = lambda: policy.compute_loss(batch)[0].item()  # noqa: E731
    torch.manual_seed(0)
    before = np.mean([measure() for _ in range(3)])
    train_steps(policy, batch)
    torch.manual_seed(0)
    after = np.mean([measure() for _ in range(3)])
    assert after < 0.5 * before


@pytest.mark.parametrize("name", ["drifting", "diffusion", "bc"])
def test_predict_action_returns_ta_steps_in_action_units(name):
    policy = make_policy(name)
    if name == "diffusion":
        policy.set_sampler("ddim", 4)
    out = policy.predict_action(make_batch()["obs"])
    assert out["action"].shape == (16, 4, 2) and out["action_pred"].shape == (16, 8, 2)
    torch.testing.assert_close(out["action"], out["action_pred"][:, 1:5])
    # untrained outputs sit near the normalised range [-1, 1], i.e. near the action limits [100, 400], not near 0
    assert out["action"].mean() > 50


def test_visual_policy_encodes_cameras_and_predicts():
    policy = make_policy("drifting", VISUAL_META, crop_shape={"image": [20, 20]})
    batch = make_batch(VISUAL_META, batch=4)
    loss, logs = policy.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and "mse_to_demo" in logs
    assert policy.obs_encoder.cameras["image"].trunk[0].weight.grad is not None
    assert policy.predict_action(batch["obs"])["action"].shape == (4, 4, 2)


def test_knn_positives_need_low_dim_observations():
    with pytest.raises(ValueError, match="only cameras"):
        make_policy("drifting", {"obs": {"image": {"shape": [3, 24, 24], "type": "rgb"}}, "action": {"shape": [2]}},
                    crop_shape={"image": [20, 20]}, positives="knn", knn_k=2)


def test_drifting_is_one_network_call_and_diffusion_uses_the_step_embedding():
    drifting, diffusion = make_policy("drifting"), make_policy("diffusion")
    calls = []
    drifting.model.register_forward_hook(lambda *a: calls.append(1))
    drifting.predict_action(make_batch()["obs"])
    assert len(calls) == 1
    assert drifting.model.step_embed_dim == 0 and diffusion.model.step_embed_dim == 128
    names = lambda p: {n for n, _ in p.named_parameters() if not n.startswith("model.step_encoder")}  # noqa: E731
    # apart from the step embedding (and the FiLM inputs it widens), the two heads share their parts
    assert {n for n in names(drifting) if "film" not in n} == {n for n in names(diffusion) if "film" not in n}


def test_knn_positives_train_with_and_without_the_neighbour_kernel():
    for kw in ({"positives": "knn", "knn_k": 4}, {"positives": "knn", "knn_k": 4, "knn_weighting": "gaussian"}):
        policy = make_policy("drifting", **kw)
        loss, _ = policy.compute_loss(make_batch())
        loss.backward()
        assert torch.isfinite(loss)


def test_knn_positive_indices_pick_self_first_then_nearest():
    feats = torch.tensor([[0.0], [0.1], [5.0], [5.2], [0.3]])
    idx = knn_positive_indices(feats, 3)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert set(idx[0].tolist()) == {0, 1, 4}
    assert set(idx[2].tolist()) == {2, 3, 4}


def test_neighbour_kernel_weighs_far_neighbours_down():
    feats = torch.tensor([[0.0], [0.1], [5.0], [5.2], [0.3]])
    idx, dist = knn_with_distances(feats, 3)
    assert idx[0].tolist() == [0, 1, 4] and dist[0].tolist() == pytest.approx([0.0, 0.1, 0.3])
    assert dist[2].tolist() == pytest.approx([0.0, 0.2, 4.7])  # row 2's third neighbour is far away
    w = neighbour_weights(dist)  # bandwidth = median over rows of the 3rd-neighbour distance (0.3)
    assert w[:, 0].tolist() == [1.0] * 5  # itself always weighs 1
    assert w[0, 2].item() == pytest.approx(float(torch.exp(torch.tensor(-0.5))))
    assert w[2, 2].item() < 1e-50  # 4.7 away: 15.7 bandwidths


def test_bad_policy_options_are_rejected():
    with pytest.raises(TypeError, match="grouping"):  # per-timestep grouping was retired (no evidence for it)
        make_policy("drifting", grouping="timestep")
    for bad in ({"n_samples": 0}, {"temperatures": []}, {"temperatures": [0.0]}, {"temperatures": [-0.1, 0.2]}):
        with pytest.raises(ValueError, match="n_samples|temperatures"):
            make_policy("drifting", **bad)
    with pytest.raises(ValueError, match="knn_weighting"):
        make_policy("drifting", positives="knn", knn_weighting="cosine")
    with pytest.raises(ValueError, match="sampler"):
        make_policy("diffusion").set_sampler("euler", 10)
    with pytest.raises(KeyError, match="unknown policy"):
        policy_class("flow")


def test_noise_skip_widens_the_initial_samples_and_still_trains():
    """noise_skip = 1 adds the noise to the U-Net's output: per-observation samples start with the noise's spread."""
    obs = {k: v[:1].expand(64, *v.shape[1:]) for k, v in make_batch()["obs"].items()}  # one observation, 64 draws
    spreads = {}
    for skip in (0.0, 1.0):
        policy = make_policy("drifting", noise_skip=skip)
        with torch.no_grad():
            torch.manual_seed(3)
            spreads[skip] = policy.generate(policy.encode_obs(obs)).std(0).mean().item()
    assert spreads[1.0] > 0.8 and spreads[1.0] > 2 * spreads[0.0]
    policy, batch = make_policy("drifting", noise_skip=1.0), make_batch()
    torch.manual_seed(0)
    before = policy.compute_loss(batch)[1]["mse_to_demo"]
    train_steps(policy, batch)
    torch.manual_seed(0)
    assert policy.compute_loss(batch)[1]["mse_to_demo"] < 0.5 * before


def test_noise_skip_anneal_decays_the_skip_and_is_saved_with_the_weights():
    """noise_skip_anneal = 0.5: the skip falls linearly from noise_skip to 0 over the first half of training; the
    progress is a buffer, so a checkpoint generates with the skip it was trained at."""
    policy = make_policy("drifting", noise_skip=1.0, noise_skip_anneal=0.5)
    skips = []
    for fraction in (0.0, 0.25, 0.5, 1.0):
        policy.set_train_progress(fraction)
        skips.append(policy.current_noise_skip())
    assert skips == [1.0, 0.5, 0.0, 0.0]
    policy.set_train_progress(0.25)
    restored = make_policy("drifting", noise_skip=1.0, noise_skip_anneal=0.5)
    restored.load_state_dict(policy.state_dict())
    assert restored.current_noise_skip() == 0.5
    cond = policy.encode_obs(make_batch()["obs"])
    noise = torch.randn(len(cond), 8, 2)
    torch.testing.assert_close(policy._generate(noise, cond), policy.model(noise, cond) + 0.5 * noise)
    with pytest.raises(ValueError, match="noise_skip_anneal"):
        make_policy("drifting", noise_skip=1.0, noise_skip_anneal=2.0)
    assert "train_progress" not in make_policy("drifting").state_dict()  # old checkpoints keep loading
