"""PushT environment (DP observation layout, exact state restore, score) and its scripted expert + demo writer."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.experts.pusht import PushSimulator, PushTExpert, generate, run_episode
from envs.pusht import DP_BLOCK_KEYPOINTS, PushTEnv, block_keypoints, derive_dp_block_keypoints

GOAL = (256.0, 256.0, np.pi / 4)


@pytest.mark.parametrize("obs_type", ["state", "visual"])
def test_env_passes_gymnasium_env_checker(obs_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice about normalised action spaces; DP's actions are pixels
        check_env(PushTEnv(obs_type=obs_type))


def test_keypoints_are_diffusion_policys_farthest_point_samples():
    np.testing.assert_array_equal(derive_dp_block_keypoints(), DP_BLOCK_KEYPOINTS)


def test_state_observation_is_keypoints_then_agent_xy():
    env = PushTEnv(obs_type="state")
    obs, _ = env.reset(seed=7)
    world = np.array([env.block.local_to_world(tuple(p)) for p in DP_BLOCK_KEYPOINTS])
    assert obs["obs"].shape == (20,) and obs["obs"].dtype == np.float32
    np.testing.assert_allclose(obs["obs"][:18].reshape(9, 2), world, atol=1e-3)
    np.testing.assert_allclose(obs["obs"][18:], env.agent.position, atol=1e-4)


def test_visual_observation_is_96px_uint8_image_and_agent_xy():
    obs, _ = PushTEnv(obs_type="visual").reset(seed=7)
    assert obs["image"].shape == (96, 96, 3) and obs["image"].dtype == np.uint8
    assert obs["agent_pos"].shape == (2,) and obs["agent_pos"].dtype == np.float32
    assert obs["image"].min() < 200  # something besides the white background was drawn


def test_reset_with_seed_is_reproducible():
    a, b = PushTEnv(), PushTEnv()
    np.testing.assert_array_equal(a.reset(seed=123)[0]["obs"], b.reset(seed=123)[0]["obs"])
    assert not np.array_equal(a.reset(seed=124)[0]["obs"], b.reset(seed=123)[0]["obs"])


def test_reset_to_state_restores_exactly():
    env = PushTEnv()
    rng = np.random.default_rng(0)
    for _ in range(5):
        state = np.array([*rng.uniform(50, 450, 2), *rng.uniform(100, 400, 2), rng.uniform(0, 2 * np.pi)])
        env.reset(options={"reset_to_state": state})
        np.testing.assert_allclose(env.get_state(), state, rtol=0, atol=1e-9)  # pymunk stores the centre of gravity
        np.testing.assert_allclose(env.keypoints(), block_keypoints(state[2:]), atol=1e-9)


def test_recorded_state_round_trips_after_pushing():
    env = PushTEnv()
    env.reset(seed=3)
    for x in np.linspace(100, 400, 20):  # sweep across the workspace, pushing the T somewhere
        env.step(np.array([x, 300.0]))
    state = env.get_state()
    restored = PushTEnv()
    restored.reset(options={"reset_to_state": state})
    np.testing.assert_allclose(restored.get_state(), state, rtol=0, atol=1e-9)


def test_reset_to_state_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="reset_to_state"):
        PushTEnv().reset(options={"reset_to_state": np.zeros(4)})


def test_score_is_one_on_the_goal_and_zero_far_away():
    env = PushTEnv()
    _, info = env.reset(options={"reset_to_state": np.array([450.0, 450.0, *GOAL])})
    assert info["score"] == pytest.approx(1.0) and info["is_success"] and info["coverage"] > 0.999
    _, reward, terminated, _, info = env.step(np.array([450.0, 450.0]))  # agent stays away from the T
    assert info["score"] == pytest.approx(1.0) and terminated and reward == pytest.approx(1.0)
    _, info = env.reset(options={"reset_to_state": np.array([450.0, 450.0, 100.0, 400.0, 0.0])})
    assert info["score"] < 0.02 and not info["is_success"]


def test_score_is_coverage_over_095_clipped():
    env = PushTEnv()
    _, info = env.reset(options={"reset_to_state": np.array([450.0, 450.0, 256.0, 276.0, np.pi / 4])})
    assert 0.0 < info["coverage"] < 0.95
    assert info["score"] == pytest.approx(info["coverage"] / 0.95)


def test_truncates_at_max_steps():
    env = PushTEnv(max_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.array([20.0, 20.0]))[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]


def test_render_returns_an_rgb_frame():
    env = PushTEnv(video_size=128)
    env.reset(seed=0)
    env.step(np.array([200.0, 200.0]))
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    assert (frame[..., 0] > 200).any() and (frame[..., 1] < 50).any()  # the red action cross is drawn


def test_private_simulator_predicts_the_env():
    env = PushTEnv()
    env.reset(seed=4)
    start_pose, agent = env.block_pose(), np.array(env.agent.position)
    targets = agent + np.linspace(0, 1.6, 20)[1:, None] * (start_pose[:2] - agent)  # drive through the block
    predicted = PushSimulator().rollout(start_pose, env.agent.position, env.agent.velocity, targets)
    for target, pose in zip(targets, predicted, strict=True):
        env.step(target)
        np.testing.assert_allclose(env.block_pose(), pose, atol=1e-6)
    assert np.linalg.norm(env.block_pose()[:2] - start_pose[:2]) > 20  # the block was really pushed


@pytest.mark.parametrize("seed", [1, 2])
def test_expert_succeeds(seed):
    success, episode = run_episode(PushTEnv(), PushTExpert(np.random.default_rng(seed)), seed, False)
    assert success and len(episode["action"]) < 300


def test_expert_demonstrations_vary_from_the_same_start():
    env = PushTEnv()
    runs = [run_episode(env, PushTExpert(np.random.default_rng(r)), 5, False)[1]["action"] for r in (0, 1)]
    n = min(len(runs[0]), len(runs[1]))
    assert np.abs(runs[0][:n] - runs[1][:n]).max() > 10.0


def test_generate_writes_a_diffusion_policy_pusht_store(tmp_path):
    stats = generate(tmp_path / "demos.zarr", n=2, seed=0, render_images=False)
    buffer = ReplayBuffer.load(tmp_path / "demos.zarr")
    assert buffer.n_episodes == 2 and stats["n_episodes"] == 2 and 0 < stats["success_rate"] <= 1
    steps = buffer.n_steps
    expected = {"state": (steps, 5), "keypoint": (steps, 9, 2), "action": (steps, 2), "n_contacts": (steps, 1)}
    assert {k: v.shape for k, v in buffer.data.items()} == expected
    assert all(v.dtype == np.float32 for v in buffer.data.values())
    assert stats["mean_length"] == pytest.approx(buffer.episode_lengths.mean())
    # keypoints are DP's keypoints of the stored block pose, and n_contacts records pushing
    state = buffer.data["state"].astype(np.float64)
    np.testing.assert_allclose(buffer.data["keypoint"][10], block_keypoints(state[10, 2:]), atol=1e-3)
    assert buffer.data["n_contacts"].max() >= 1


def test_stored_actions_replay_to_success(tmp_path):
    stats = generate(tmp_path / "demos.zarr", n=1, seed=0, render_images=False)
    episode = ReplayBuffer.load(tmp_path / "demos.zarr").get_episode(0)
    env = PushTEnv()
    env.reset(seed=stats["episode_seeds"][0])
    np.testing.assert_allclose(env.get_state(), episode["state"][0], atol=1e-4)
    for action in episode["action"]:
        _, _, terminated, _, info = env.step(action.astype(np.float64))
    assert terminated and info["is_success"]


def test_generate_stores_96px_images(tmp_path):
    generate(tmp_path / "demos.zarr", n=1, seed=1, render_images=True)
    buffer = ReplayBuffer.load(tmp_path / "demos.zarr", keys=["img", "action"])
    assert buffer.data["img"].shape == (buffer.n_steps, 96, 96, 3) and buffer.data["img"].dtype == np.uint8


def test_generate_never_uses_test_seeds(tmp_path):
    stats = generate(tmp_path / "demos.zarr", n=1, seed=100000, render_images=False)
    assert stats["episode_seeds"][0] >= 100050


def test_generate_rejects_bad_n(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        generate(tmp_path / "demos.zarr", n=0)
    assert not (tmp_path / "demos.zarr").exists()


def test_coverage_of_a_state_is_the_same_in_every_process():
    # pymunk orders a body's shapes by memory address; the coverage must not depend on that order (it did, in the
    # last bit, so one checkpoint's evaluation differed between processes)
    code = ("from envs.pusht import PushTEnv; import numpy as np; env = PushTEnv(); g = np.random.default_rng(0); "
            "print([env.reset(options={'reset_to_state': np.r_[450., 450., g.uniform(180, 330, 2), g.uniform(0, 6)]})"
            "[1]['coverage'] for _ in range(200)])")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parents[1]).stdout.strip() for _ in range(4)}
    assert len(runs) == 1 and sum(c > 0.1 for c in json.loads(runs.pop())) > 50
