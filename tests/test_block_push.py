"""BlockPush: the env's contract and scoring, the oracle's success and modes, the demo store."""

import math

import numpy as np
import pytest

pytest.importorskip("pybullet")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from drifting_policy.data.replay_buffer import ReplayBuffer  # noqa: E402
from envs.block_push import (  # noqa: E402
    OBS_DIM,
    BlockPushEnv,
    episode_modes,
    mode_statistics,
)
from envs.experts.block_push import (  # noqa: E402
    BlockPushOracle,
    balanced_modes,
    draw_mode,
    generate,
    run_episode,
    shortest_path,
)


@pytest.fixture(scope="module")
def env():
    e = BlockPushEnv(render_mode="rgb_array")
    yield e
    e.close()


def _layout(block0, block1, target0=(0.28, 0.2), target1=(0.52, 0.2)) -> np.ndarray:
    """A 16-D observation-shaped layout for reset_to_state (effector entries are ignored there)."""
    obs = np.zeros(OBS_DIM, np.float32)
    obs[0:3], obs[3:6] = [*block0, 0.3], [*block1, 1.2]
    obs[10:13], obs[13:16] = [*target0, math.pi], [*target1, math.pi]
    return obs


def test_passes_gymnasium_check_env_in_both_action_modes(env):
    check_env(env, skip_render_check=False)
    delta = BlockPushEnv(abs_action=False)
    check_env(delta)
    delta.close()


def test_reset_with_a_seed_is_reproducible_and_matches_the_original_layout(env):
    a = env.reset(seed=3)[0]["obs"]
    b = env.reset(seed=3)[0]["obs"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, env.reset(seed=4)[0]["obs"])
    for seed in range(20):
        o = env.reset(seed=seed)[0]["obs"]
        assert abs(o[0] - o[3]) > 0.1                               # blocks differ by > 0.1 in x
        assert np.all(np.abs(o[[1, 4]] + 0.2) <= 0.151)             # blocks around y = -0.2
        np.testing.assert_allclose(sorted([o[10], o[13]]), [0.28, 0.52], atol=0.0051)  # x = 0.4 -+ 0.12
        np.testing.assert_allclose(o[[11, 14]], 0.2, atol=0.008)
        np.testing.assert_allclose(o[6:8], [0.3, -0.4], atol=0.01)  # effector settled at its start
        np.testing.assert_allclose(o[8:10], [0.3, -0.4])


def test_absolute_action_moves_the_effector_there_and_is_clipped_to_the_workspace(env):
    env.reset(seed=0)
    for _ in range(10):
        obs = env.step(np.array([0.35, -0.45]))[0]["obs"]
    np.testing.assert_allclose(obs[6:8], [0.35, -0.45], atol=0.005)
    obs = env.step(np.array([2.0, -3.0]))[0]["obs"]
    np.testing.assert_allclose(obs[8:10], [0.7, -0.5])


def _teleport(env, block: int, xy) -> np.ndarray:
    """Move a block by editing the full state (get_state layout: block b's position at 13 * b) and restoring it
    (its reward flags stay as they were); returns the effector target, to hold the effector still."""
    state = env.get_state()
    state[13 * block: 13 * block + 3] = [*xy, 0.02]
    env.reset(options={"reset_to_state": state})
    return state[77:79]


def test_scoring_of_a_hand_built_episode(env):
    _, info = env.reset(options={"reset_to_state": _layout((0.4, -0.05), (0.3, -0.3))})
    assert (info["n_completed"], info["score"], info["is_success"], info["first_block"]) == (0, 0.0, False, -1)
    hold = _teleport(env, 0, (0.53, 0.19))          # block 0 into target 1
    _, r, term, trunc, info = env.step(hold)
    assert r == pytest.approx(0.49) and not term and not trunc
    assert (info["n_completed"], info["score"], info["is_success"]) == (1, 0.5, False)
    assert (info["first_block"], info["block0_target"], info["block1_target"]) == (0, 1, -1)
    assert env.step(hold)[1] == 0.0                  # the entry reward is paid once per block-target pair
    hold = _teleport(env, 1, (0.27, 0.21))          # block 1 into target 0
    _, r, term, trunc, info = env.step(hold)
    assert r == pytest.approx(0.51) and term and not trunc
    assert (info["n_completed"], info["score"], info["is_success"]) == (2, 1.0, True)
    assert (info["first_block"], info["block0_target"], info["block1_target"]) == (0, 1, 0)


def test_a_block_placed_in_a_target_at_reset_counts_but_earns_no_entry_reward(env):
    obs, info = env.reset(options={"reset_to_state": _layout((0.52, 0.2), (0.4, -0.05))})
    assert info["n_completed"] == 1 and info["first_block"] == 0
    assert env.step(obs["obs"][8:10])[1] == 0.0


def test_episode_ends_by_truncation_at_max_steps():
    short = BlockPushEnv(max_steps=3)
    obs = short.reset(seed=0)[0]
    flags = [short.step(obs["obs"][8:10])[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    short.close()


def test_both_blocks_in_the_same_target_count_once(env):
    obs, info = env.reset(options={"reset_to_state": _layout((0.28, 0.225), (0.28, 0.175))})
    assert info["n_completed"] == 1 and not info["is_success"]


def test_get_state_round_trip_reproduces_the_future(env):
    env.reset(seed=5)
    oracle = BlockPushOracle()
    oracle.reset((1, 0))
    obs = env.reset(seed=5)[0]
    for _ in range(25):
        obs = env.step(oracle.act(obs["obs"]))[0]
    state, actions, first = env.get_state(), [], []
    for _ in range(10):
        actions.append(oracle.act(obs["obs"]))
        obs = env.step(actions[-1])[0]
        first.append(obs["obs"])
    env.reset(options={"reset_to_state": state})
    second = [env.step(a)[0]["obs"] for a in actions]
    np.testing.assert_allclose(np.array(first), np.array(second), atol=1e-4)


def test_reset_to_a_first_observation_restores_that_layout(env):
    obs0 = env.reset(seed=11)[0]["obs"]
    obs1 = env.reset(seed=999, options={"reset_to_state": obs0})[0]["obs"]
    np.testing.assert_allclose(obs0, obs1, atol=1e-4)
    with pytest.raises(ValueError, match="reset_to_state"):
        env.reset(options={"reset_to_state": np.zeros(7)})


def test_render_returns_an_rgb_frame(env):
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (*env.render_size, 3) and frame.std() > 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_gets_both_blocks_in(env, seed):
    ep = run_episode(env, BlockPushOracle(), seed)
    assert ep["success"] and len(ep["action"]) < 200
    modes = episode_modes(ep["all_obs"])
    k = ep["order"][0]
    assert modes["first_block"] == k
    assert (modes["block0_target"], modes["block1_target"]) == tuple(ep["assignment"])


def test_oracle_modes_are_random_and_balanced():
    seen = {draw_mode(np.random.default_rng(seed)) for seed in range(40)}
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}
    stream = balanced_modes(np.random.default_rng(0))
    modes = [next(stream) for _ in range(400)]
    assert all(len(set(modes[i:i + 4])) == 4 for i in range(0, 400, 4))
    assert modes[:8] != modes[8:16]   # shuffled, not cycled


def test_mode_statistics_fractions():
    modes = [{"first_block": 0, "block0_target": 0, "block1_target": 1},
             {"first_block": 1, "block0_target": 1, "block1_target": 0},
             {"first_block": 1, "block0_target": -1, "block1_target": 0},
             {"first_block": -1, "block0_target": -1, "block1_target": -1}]
    s = mode_statistics(modes)
    assert s == {"first_block0": 0.25, "first_block1": 0.5, "first_none": 0.25,
                 "b0t0_b1t1": 0.25, "b0t1_b1t0": 0.25, "other": 0.5}


def test_shortest_path_goes_around_an_obstacle():
    path = shortest_path([0.0, 0.0], [1.0, 0.0], [[0.5, 0.0]], [0.1])
    np.testing.assert_allclose(path[-1], [1.0, 0.0])
    points = np.concatenate([[[0.0, 0.0]], path])
    fine = np.concatenate([np.linspace(a, b, 50) for a, b in zip(points[:-1], points[1:], strict=True)])
    assert np.linalg.norm(fine - [0.5, 0.0], axis=1).min() >= 0.1 - 1e-9
    assert len(path) > 1


def test_generate_writes_successful_episodes_in_dp_layout(tmp_path):
    out = tmp_path / "bp.zarr"
    stats = generate(out, n=2, seed=0)
    buf = ReplayBuffer.load(out)
    assert buf.n_episodes == 2 and set(buf.data) == {"obs", "action"}
    assert buf.data["obs"].shape == (buf.n_steps, 16) and buf.data["action"].shape == (buf.n_steps, 2)
    assert buf.data["obs"].dtype == np.float32 and buf.data["action"].dtype == np.float32
    assert stats["n_episodes"] == 2 and 0 < stats["success_rate"] <= 1
    assert stats["mode_first_block0"] + stats["mode_first_block1"] == pytest.approx(1.0)
    # The abs action is the effector target the next observation reports.
    first = buf.get_episode(0)
    np.testing.assert_allclose(first["action"][:-1], first["obs"][1:, 8:10], atol=1e-6)
