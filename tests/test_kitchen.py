"""Franka Kitchen environment (D4RL layout, subtask bookkeeping, abs actions) and its scripted expert + demo writer."""

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs.experts.kitchen import generate, run_episode
from envs.kitchen import COMPLETION_THRESHOLD, TASK_GOALS, TASK_QPOS_INDICES, TASKS, KitchenEnv


@pytest.fixture(scope="module")
def env():
    return KitchenEnv()


@pytest.fixture(scope="module")
def microwave_episode(env):
    """The expert's fastest subtask, run once and shared."""
    return run_episode(env, ["microwave"], seed=3)


def _state_with(env, task, values):
    state = np.concatenate([env.init_qpos, env.init_qvel])
    state[TASK_QPOS_INDICES[task]] = values
    return state


@pytest.mark.parametrize("obs_layout", ["d4rl", "native"])
def test_env_passes_gymnasium_env_checker(obs_layout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice about unbounded observation boxes
        check_env(KitchenEnv(obs_layout=obs_layout, render_size=(48, 64)))


def test_d4rl_observation_is_robot_qpos_object_qpos_then_30_zeros(env):
    obs, info = env.reset(seed=0)
    o = obs["obs"]
    assert o.shape == (60,) and o.dtype == np.float32
    np.testing.assert_allclose(o[:30], env.init_qpos, atol=0.002)  # only the small observation noise differs
    assert not np.array_equal(o[:30], env.init_qpos.astype(np.float32))
    np.testing.assert_array_equal(o[30:], 0)
    assert info["n_completed"] == 0 and info["completed_tasks"] == [] and info["score"] == 0.0


def test_native_observation_is_qpos_qvel_59():
    obs, _ = KitchenEnv(obs_layout="native").reset(seed=0)
    assert obs["obs"].shape == (59,)


def test_reset_seed_is_reproducible_and_seeds_differ(env):
    a = env.reset(seed=5)[0]["obs"]
    a1 = env.step(np.full(9, 0.3))[0]["obs"]
    b = env.reset(seed=5)[0]["obs"]
    b1 = env.step(np.full(9, 0.3))[0]["obs"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a, env.reset(seed=6)[0]["obs"])


@pytest.mark.parametrize("task", TASKS)
def test_subtask_counts_as_done_exactly_within_threshold_of_its_goal(env, task):
    goal = TASK_GOALS[task]
    _, info = env.reset(options={"reset_to_state": _state_with(env, task, goal)})
    assert info["completed_tasks"] == [task] and info["n_completed"] == 1
    direction = np.zeros_like(goal)
    direction[0] = 1.0
    inside = _state_with(env, task, goal + 0.9 * COMPLETION_THRESHOLD * direction)
    assert task in env.reset(options={"reset_to_state": inside})[1]["completed_tasks"]
    outside = _state_with(env, task, goal + 1.1 * COMPLETION_THRESHOLD * direction)
    assert task not in env.reset(options={"reset_to_state": outside})[1]["completed_tasks"]


def test_initial_state_completes_nothing_and_four_done_is_success(env):
    assert env.reset(seed=0)[1]["n_completed"] == 0
    state = np.concatenate([env.init_qpos, env.init_qvel])
    for task in ("microwave", "slide cabinet", "light switch", "bottom burner"):
        state[TASK_QPOS_INDICES[task]] = TASK_GOALS[task]
    _, info = env.reset(options={"reset_to_state": state})
    assert info["n_completed"] == 4 and info["is_success"] and info["score"] == 1.0


def test_reset_to_state_restores_qpos_qvel_exactly(env):
    env.reset(seed=1)
    for _ in range(3):
        env.step(np.linspace(-0.5, 0.5, 9))
    state = env.get_state()
    env.reset(seed=2, options={"reset_to_state": state})
    np.testing.assert_array_equal(env.get_state(), state)


def test_bad_state_and_layout_raise_clear_errors(env):
    with pytest.raises(ValueError, match="reset_to_state"):
        env.reset(options={"reset_to_state": np.zeros(30)})
    with pytest.raises(ValueError, match="obs_layout"):
        KitchenEnv(obs_layout="pixels")
    with pytest.raises(ValueError, match="action of shape"):
        env.step(np.zeros(7))


def test_episode_truncates_at_max_steps():
    env = KitchenEnv(max_steps=3, render_mode=None)
    env.reset(seed=0)
    flags = [env.step(np.zeros(9))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_render_is_rgb_frame():
    env = KitchenEnv(render_size=(48, 64))
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5


def test_expert_opens_the_microwave(microwave_episode):
    ep = microwave_episode
    assert ep["success"] and ep["completed"] == ["microwave"]
    assert ep["obs"].shape == (len(ep["action"]), 60) and ep["action_abs"].shape == ep["action"].shape


def test_abs_actions_replay_the_velocity_demo(microwave_episode):
    """action_abs are the joint targets the velocity actions sent: replayed in abs mode they give the same run."""
    ep = microwave_episode
    env = KitchenEnv(abs_action=True, render_mode=None)
    env.reset(seed=3)
    states = []
    for a in ep["action_abs"]:
        states.append(env.get_state())
        _, _, _, _, info = env.step(a)
    np.testing.assert_allclose(np.array(states)[:, :30], ep["state"][:, :30], atol=0.02)
    assert "microwave" in info["completed_tasks"]


def test_generate_writes_dp_zarr_layout(tmp_path):
    out = tmp_path / "kitchen.zarr"
    stats = generate(out, n=1, seed=3, n_tasks=1)
    buf = ReplayBuffer.load(out)
    assert buf.n_episodes == 1 and stats["n_episodes"] == 1
    t = buf.n_steps
    assert buf.data["obs"].shape == (t, 60) and buf.data["action"].shape == (t, 9)
    assert buf.data["action_abs"].shape == (t, 9) and buf.data["state"].shape == (t, 59)
    np.testing.assert_allclose(buf.data["state"][0][:30], KitchenEnv(render_mode=None).init_qpos)
    assert 0 < stats["success_rate"] <= 1 and stats["mean_length"] == t
