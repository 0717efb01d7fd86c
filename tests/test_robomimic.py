"""Lift / Can / ToolHang environment, expert HDF5 files and the robomimic reader (robosuite 1.5.2, osmesa)."""

import json
import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("envs.robomimic")  # first: it picks MUJOCO_GL (osmesa without a GPU) before robosuite sets egl
pytest.importorskip("robosuite")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from drifting_policy.data.robomimic_hdf5 import cache_path, load_robomimic_replay_buffer  # noqa: E402
from drifting_policy.utils.rotation import (  # noqa: E402
    axis_angle_to_matrix,
    matrix_to_rot6d,
    rot6d_to_axis_angle,
    rot6d_to_matrix,
)
from envs.datasets import write_abs_action_cache  # noqa: E402
from envs.experts.robomimic import generate_lift  # noqa: E402
from envs.robomimic import RobomimicEnv  # noqa: E402

STATE_KEYS = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    """Two expert Lift demos with 32x32 images, written by our generator."""
    path = tmp_path_factory.mktemp("lift") / "lift.hdf5"
    stats = generate_lift(path, 2, seed=0, render_images=True, image_size=32, perturb_prob=0.0)
    assert stats["success_rate"] > 0 and path.exists()
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_state_env_passes_check_env_with_dp_layout():
    env = RobomimicEnv("Lift", obs_type="state", abs_action=True)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=100000)
    assert obs["obs"].shape == (19,) and obs["obs"].dtype == np.float32
    assert env.action_space.shape == (10,) and env.max_steps == 400
    again, _ = env.reset(seed=100000)
    np.testing.assert_array_equal(obs["obs"], again["obs"])
    frame = env.render()  # rollout videos of state tasks: a frame by default, from a lazily built camera
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_visual_env_passes_check_env_without_object_state():
    env = RobomimicEnv("Lift", obs_type="visual", abs_action=False, image_size=24)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos", "robot0_eef_quat",
                        "robot0_gripper_qpos"}
    assert obs["agentview_image"].shape == (24, 24, 3) and obs["agentview_image"].dtype == np.uint8
    env.close()


def _project(env, camera: str, point: np.ndarray, size: int) -> tuple[float, float]:
    """Pixel (row, col) of a world point in a MuJoCo camera, rows counted from the top of an upright image."""
    model, data = env.rs_env.sim.model._model, env.rs_env.sim.data._data
    cam = model.camera(camera).id
    rel = data.cam_xmat[cam].reshape(3, 3).T @ (point - data.cam_xpos[cam])  # camera looks along -z, y is up
    f = (size / 2) / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    return size / 2 - f * rel[1] / -rel[2], size / 2 + f * rel[0] / -rel[2]


def test_one_step_renders_both_cameras_upright_at_configured_size():
    size = 64
    env = RobomimicEnv("Lift", obs_type="visual", abs_action=False, image_size=size)
    env.reset(seed=7)
    obs, *_ = env.step(np.zeros(7, np.float32))
    for key in ("agentview_image", "robot0_eye_in_hand_image"):
        assert obs[key].shape == (size, size, 3)
    # the red cube appears where the camera model projects it: an upside-down image puts it at the mirrored row
    img = obs["agentview_image"].astype(int)
    red = img[..., 0] - np.maximum(img[..., 1], img[..., 2]) > 60
    assert red.sum() >= 2
    rows, cols = np.nonzero(red)
    cube = np.array(env.rs_env.sim.data.body_xpos[env.rs_env.cube_body_id])
    row, col = _project(env, "agentview", cube, size)
    assert abs(rows.mean() - row) < 3 and abs(cols.mean() - col) < 3
    assert abs((size - 1 - rows.mean()) - row) > 6  # the flipped image would not match
    # eye-in-hand: the fingers occupy the bottom rows of the image
    hand = obs["robot0_eye_in_hand_image"].astype(float).mean(axis=(1, 2))
    assert hand[-size // 10:].mean() < hand[: size // 10].mean() - 50
    env.close()


def test_tool_hang_defaults_sideview_and_eye_in_hand():
    env = RobomimicEnv("tool_hang", obs_type="visual", abs_action=False, image_size=40)
    env.reset(seed=1)
    obs, *_ = env.step(np.zeros(7, np.float32))
    assert env.max_steps == 700 and env.camera_names == ["sideview", "robot0_eye_in_hand"]
    assert obs["sideview_image"].shape == (40, 40, 3) and obs["robot0_eye_in_hand_image"].shape == (40, 40, 3)
    env.close()


def test_generated_hdf5_has_robomimic_layout(lift_file):
    with h5py.File(lift_file) as f:
        meta = json.loads(f["data"].attrs["env_args"])
        assert meta["env_name"] == "Lift" and meta["type"] == 1
        assert [n.decode() for n in f["mask/train"][:]] + [n.decode() for n in f["mask/valid"][:]] == ["demo_0",
                                                                                                       "demo_1"]
        demo = f["data/demo_0"]
        t = demo.attrs["num_samples"]
        assert demo["actions"].shape == (t, 7) and demo["states"].shape[0] == t
        assert demo["obs/agentview_image"].shape == (t, 32, 32, 3) and demo["obs/object"].shape == (t, 10)
        assert demo["dones"][-1] == 1 and demo["rewards"][-1] == 1.0
        assert np.all(np.abs(demo["actions"][:]) <= 1.0)


def test_hdf5_round_trips_into_replay_buffer_and_cache(lift_file):
    keys = [*STATE_KEYS, "agentview_image"]
    rb = load_robomimic_replay_buffer(lift_file, keys, abs_action=False)
    with h5py.File(lift_file) as f:
        lengths = [f[f"data/demo_{i}"].attrs["num_samples"] for i in range(2)]
        for i in range(2):
            ep = rb.get_episode(i)
            for k in keys:
                np.testing.assert_array_equal(ep[k], f[f"data/demo_{i}/obs/{k}"][:])
            np.testing.assert_array_equal(ep["action"], f[f"data/demo_{i}/actions"][:])
    assert list(rb.episode_lengths) == lengths
    cache = cache_path(lift_file, keys, False)
    assert cache.exists() and cache != cache_path(lift_file, keys, True)
    again = load_robomimic_replay_buffer(lift_file, keys, abs_action=False)
    np.testing.assert_array_equal(again.data["agentview_image"], rb.data["agentview_image"])


def test_abs_conversion_replays_to_the_recorded_object_pose(lift_file):
    with pytest.raises(FileNotFoundError, match="prepare_dataset"):  # the package alone cannot run robosuite
        load_robomimic_replay_buffer(lift_file, STATE_KEYS, abs_action=True)
    write_abs_action_cache(lift_file, STATE_KEYS)
    rb = load_robomimic_replay_buffer(lift_file, STATE_KEYS, abs_action=True)
    env = RobomimicEnv("Lift", obs_type="state", abs_action=True)
    for i in range(rb.n_episodes):
        ep = rb.get_episode(i)
        assert ep["action"].shape[1] == 10
        obs, _ = env.reset(options={"reset_to_state": ep["states"][0]})
        np.testing.assert_allclose(obs["obs"][:10], ep["object"][0], atol=1e-6)
        for a in ep["action"][:-1]:
            obs, _, _, _, info = env.step(a)
        # the state before the last recorded action: cube position within 2 mm
        np.testing.assert_allclose(obs["obs"][:3], ep["object"][-1][:3], atol=2e-3)
        assert ep["object"][-1][2] > 0.83  # and the cube is up: the episode was a lift, not a no-op
    env.close()


def _copy(src, dst):
    shutil.copy(src, dst)
    return dst


def test_hdf5_without_env_args_is_rejected(lift_file, tmp_path):
    path = _copy(lift_file, tmp_path / "no_env_args.hdf5")
    with h5py.File(path, "r+") as f:
        del f["data"].attrs["env_args"]
    with pytest.raises(ValueError, match="env_args"):
        load_robomimic_replay_buffer(path, STATE_KEYS, abs_action=False, use_cache=False)


def test_demo_missing_an_obs_key_is_named(lift_file, tmp_path):
    path = _copy(lift_file, tmp_path / "missing_key.hdf5")
    with h5py.File(path, "r+") as f:
        del f["data/demo_1/obs/robot0_eef_quat"]
    with pytest.raises(KeyError, match=r"demo_1/obs lacks key\(s\) \['robot0_eef_quat'\]"):
        load_robomimic_replay_buffer(path, STATE_KEYS, abs_action=False, use_cache=False)


def test_action_dim_that_disagrees_with_the_task_is_rejected(lift_file, tmp_path):
    path = _copy(lift_file, tmp_path / "bad_actions.hdf5")
    with h5py.File(path, "r+") as f:
        a = f["data/demo_0/actions"][:]
        del f["data/demo_0/actions"]
        f["data/demo_0/actions"] = np.concatenate([a, a[:, :1]], axis=1)
    with pytest.raises(ValueError, match=r"demo_0/actions has shape \(\d+, 8\).*7-D delta"):
        write_abs_action_cache(path, STATE_KEYS)


def test_demo_seeds_never_reach_the_test_seeds(tmp_path):
    with pytest.raises(ValueError, match="overlap the test seeds"):
        generate_lift(tmp_path / "x.hdf5", 10, seed=99_990)


def test_rot6d_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    rotvec = rng.normal(size=(50, 3))
    mat = axis_angle_to_matrix(rotvec)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(mat)), mat, atol=1e-10)
    np.testing.assert_allclose(axis_angle_to_matrix(rot6d_to_axis_angle(matrix_to_rot6d(mat))), mat, atol=1e-10)
    noisy = rot6d_to_matrix(matrix_to_rot6d(mat) + rng.normal(0, 0.1, (50, 6)))
    np.testing.assert_allclose(noisy @ np.swapaxes(noisy, -1, -2), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(noisy), 1.0, atol=1e-10)
