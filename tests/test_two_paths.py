"""TwoPaths (issue 9): gymnasium contract, scoring on hand-built episodes, the expert's dataset round trip."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs import demo_generator, make_env
from envs.two_paths import OBSTACLE_RADIUS, TwoPathsEnv, segment_hits_disk

START_GOAL = np.array([0.0, -1.0, 0.0, 1.0])


def drive(env: TwoPathsEnv, waypoints) -> tuple[list[dict], bool]:
    """Step toward each waypoint in turn (absolute targets) until the episode ends; returns infos, ended."""
    infos = []
    for wp in waypoints:
        for _ in range(200):
            _, _, terminated, truncated, info = env.step(np.asarray(wp, dtype=np.float32))
            infos.append(info)
            if terminated or truncated:
                return infos, True
            if np.linalg.norm(env.agent - wp) < 1e-6:
                break
    return infos, False


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env_passes():
    check_env(TwoPathsEnv(), skip_render_check=False)


def test_registered_in_envs():
    assert isinstance(make_env("TwoPaths-v0").unwrapped, TwoPathsEnv)


def test_reset_is_reproducible_and_restores_states():
    env = TwoPathsEnv()
    a, _ = env.reset(seed=100000)
    b, _ = env.reset(seed=100000)
    np.testing.assert_array_equal(a["obs"], b["obs"])
    obs, info = env.reset(options={"reset_to_state": START_GOAL})
    np.testing.assert_allclose(obs["obs"], START_GOAL)
    assert info["side"] is None and info["score"] == 0.0
    with pytest.raises(ValueError, match="reset_to_state"):
        env.reset(options={"reset_to_state": np.zeros(3)})


def test_straight_through_the_obstacle_fails():
    env = TwoPathsEnv()
    env.reset(options={"reset_to_state": START_GOAL})
    infos, ended = drive(env, [(0.0, 1.0)])  # the mean of left and right
    assert ended and infos[-1]["touched"] and not infos[-1]["is_success"]
    assert max(i["score"] for i in infos) == 0.0
    assert np.linalg.norm(env.agent) == pytest.approx(OBSTACLE_RADIUS, abs=1e-6)  # stopped on the surface


@pytest.mark.parametrize("side", [-1, 1])
def test_going_around_succeeds_and_reports_the_side(side):
    env = TwoPathsEnv()
    env.reset(options={"reset_to_state": START_GOAL})
    infos, ended = drive(env, [(0.75 * side, -0.2), (0.75 * side, 0.2), (0.0, 1.0)])
    assert ended and infos[-1]["is_success"] and infos[-1]["score"] == 1.0
    assert infos[-1]["side"] == ("left" if side < 0 else "right")
    assert infos[0]["side"] is None  # undecided while below the obstacle


def test_step_size_is_clipped_and_horizon_truncates():
    env = TwoPathsEnv(max_steps=5)
    env.reset(options={"reset_to_state": START_GOAL})
    for t in range(5):
        before = env.agent.copy()
        _, _, terminated, truncated, _ = env.step(np.array([1.2, -1.2], dtype=np.float32))
        assert np.linalg.norm(env.agent - before) == pytest.approx(env.max_step)
        assert not terminated and truncated == (t == 4)


def test_segment_disk_intersection():
    c = np.zeros(2)
    assert segment_hits_disk(np.array([0.0, -1.0]), np.array([0.0, 1.0]), c, 0.4) == pytest.approx(0.3)
    assert segment_hits_disk(np.array([0.5, -1.0]), np.array([0.5, 1.0]), c, 0.4) is None
    assert segment_hits_disk(np.array([0.0, -1.0]), np.array([0.0, -0.7]), c, 0.4) is None


def test_generate_round_trip(tmp_path):
    path = tmp_path / "two_paths.zarr"
    stats = demo_generator("two_paths")(path, 20, seed=3)
    buf = ReplayBuffer.load(path)
    assert buf.n_episodes == 20 and set(buf.data) == {"obs", "action"}
    assert buf.data["obs"].shape == (buf.n_steps, 4) and buf.data["obs"].dtype == np.float32
    assert buf.data["action"].shape == (buf.n_steps, 2) and buf.data["action"].dtype == np.float32
    assert stats["n_episodes"] == 20 and stats["left"] + stats["right"] == pytest.approx(1.0)
    assert 0.2 <= stats["left"] <= 0.8  # 50/50 sides; 20 episodes stay within this band w.p. > 0.99
    # Replaying an episode's actions from its first state reproduces it and succeeds.
    env = TwoPathsEnv()
    ep = buf.get_episode(0)
    env.reset(options={"reset_to_state": ep["obs"][0].astype(np.float64)})
    for t, a in enumerate(ep["action"]):
        np.testing.assert_allclose(env._obs()["obs"], ep["obs"][t], atol=1e-6)
        _, _, terminated, _, info = env.step(a)
    assert terminated and info["is_success"]


def test_mode_statistics_counts_sides_from_final_infos():
    from envs.two_paths import mode_statistics

    stats = mode_statistics([{"side": "left"}, {"side": "left"}, {"side": "right"}, {}])  # {}: hit the obstacle
    assert stats == {"left": 0.5, "right": 0.25, "none": 0.25, "left_share": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="no episodes"):
        mode_statistics([])


def test_a_rollout_video_that_cannot_be_written_warns_instead_of_failing(tmp_path):
    from drifting_policy.evaluation.rollout import _write_video

    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.warns(UserWarning, match="returned no frame"):
        assert _write_video([frame, None], tmp_path / "a.mp4", "TwoPathsEnv") is None
    assert not (tmp_path / "a.mp4").exists()
    assert _write_video([frame, frame], tmp_path / "b.mp4", "TwoPathsEnv") == tmp_path / "b.mp4"
    assert (tmp_path / "b.mp4").stat().st_size > 0


def test_a_video_writer_without_mp4_support_warns_instead_of_ending_the_run(tmp_path, monkeypatch):
    """Without imageio-ffmpeg, imageio picks a writer that rejects fps (TypeError): seen on a GPU machine mid-run."""
    import imageio

    from drifting_policy.evaluation.rollout import _write_video

    def tiff_like_writer(*args, **kwargs):
        raise TypeError("TiffWriter.write() got an unexpected keyword argument 'fps'")

    monkeypatch.setattr(imageio, "mimsave", tiff_like_writer)
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.warns(UserWarning, match="imageio-ffmpeg"):
        assert _write_video([frame, frame], tmp_path / "c.mp4", "TwoPathsEnv") is None
