"""Lift / Can / ToolHang environment, expert HDF5 files and the robomimic reader (robosuite 1.5.2, osmesa)."""

import json
import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("envs.robomimic")  # `import envs` picks MUJOCO_GL (envs/rendering.py) before robosuite sees it
pytest.importorskip("robosuite")

from gymnasium.utils.env_checker import check_env  # noqa: E402
from other_tools import run_tool  # noqa: E402

from drifting_policy.data.robomimic_hdf5 import cache_path, load_robomimic_replay_buffer  # noqa: E402
from drifting_policy.utils.rotation import (  # noqa: E402
    axis_angle_to_matrix,
    matrix_to_rot6d,
    rot6d_to_axis_angle,
    rot6d_to_matrix,
)
from envs.datasets import check_delta_controller, write_abs_action_cache  # noqa: E402
from envs.experts.robomimic import generate_lift  # noqa: E402
from envs.robomimic import RobomimicEnv, recorded_controller_differences  # noqa: E402

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


def test_demo_seeds_skip_the_test_seeds(tmp_path):
    path = tmp_path / "x.hdf5"
    stats = generate_lift(path, 2, seed=99_999, perturb_prob=0.0)
    assert stats["episode_seeds"] == [99_999, 100_050]
    with h5py.File(path, "r") as f:
        assert [int(f[f"data/demo_{i}"].attrs["seed"]) for i in range(2)] == [99_999, 100_050]


def test_rot6d_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    rotvec = rng.normal(size=(50, 3))
    mat = axis_angle_to_matrix(rotvec)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(mat)), mat, atol=1e-10)
    np.testing.assert_allclose(axis_angle_to_matrix(rot6d_to_axis_angle(matrix_to_rot6d(mat))), mat, atol=1e-10)
    noisy = rot6d_to_matrix(matrix_to_rot6d(mat) + rng.normal(0, 0.1, (50, 6)))
    np.testing.assert_allclose(noisy @ np.swapaxes(noisy, -1, -2), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(noisy), 1.0, atol=1e-10)


# ---------------------------------------------------------------- robomimic 0.3.0 itself reads our files

# What robomimic's train.py does with a dataset: env metadata, shape metadata, a SequenceDataset with its defaults
# (load_next_obs=True) over the train mask, low-dim data and demo attributes cached in memory
READ_AS_ROBOMIMIC = """
import sys, json, numpy as np
import robomimic, robomimic.utils.file_utils as FileUtils, robomimic.utils.obs_utils as ObsUtils
from robomimic.utils.dataset import SequenceDataset
path, out = sys.argv[1], sys.argv[2]
low, rgb = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"], ["agentview_image"]
ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": low, "rgb": rgb}})
env_meta = FileUtils.get_env_metadata_from_dataset(path)
shape_meta = FileUtils.get_shape_metadata_from_dataset(path, all_obs_keys=low + rgb)
ds = SequenceDataset(hdf5_path=path, obs_keys=low + rgb, dataset_keys=("actions", "rewards", "dones"),
                     hdf5_cache_mode="low_dim", filter_by_attribute="train")
items = [ds[i] for i in range(len(ds))]
arrays = {f"{group}/{k}": np.stack([it[group][k][0] for it in items]) for group in ("obs", "next_obs") for k in low + rgb}
arrays["actions"] = np.stack([it["actions"][0] for it in items])
np.savez(out, **arrays)
print(json.dumps({"robomimic": robomimic.__version__, "env_name": env_meta["env_name"], "type": env_meta["type"],
                  "ac_dim": shape_meta["ac_dim"], "demos": ds.demos,
                  "model_file_cached": all("model_file" in ds.hdf5_cache[d]["attrs"] for d in ds.demos)}))
"""


def test_robomimic_0_3_sequence_dataset_reads_our_file_with_next_obs(lift_file, tmp_path):
    out = run_tool("robomimic", READ_AS_ROBOMIMIC, lift_file, tmp_path / "read.npz", cwd=tmp_path)

    assert out["robomimic"] == "0.3.0" and out["env_name"] == "Lift" and out["type"] == 1 and out["ac_dim"] == 7
    assert out["model_file_cached"]
    read = np.load(tmp_path / "read.npz")
    with h5py.File(lift_file) as f:
        assert out["demos"] == [n.decode() for n in f["mask/train"][:]]
        demos = [f[f"data/{d}"] for d in out["demos"]]
        np.testing.assert_allclose(read["actions"], np.concatenate([d["actions"][:] for d in demos]), atol=1e-6)
        for group in ("obs", "next_obs"):
            ours = lambda k: np.concatenate([d[f"{group}/{k}"][:] for d in demos])  # noqa: B023, E731
            for k in STATE_KEYS:
                np.testing.assert_allclose(read[f"{group}/{k}"], ours(k), atol=1e-6)
            np.testing.assert_array_equal(read[f"{group}/agentview_image"], ours("agentview_image"))


def test_next_obs_is_the_observation_after_each_action(lift_file):
    with h5py.File(lift_file) as f:
        demo = f["data/demo_0"]
        for k in [*STATE_KEYS, "agentview_image"]:
            np.testing.assert_array_equal(demo[f"next_obs/{k}"][:-1], demo[f"obs/{k}"][1:])
        env = RobomimicEnv("Lift", obs_type="visual", abs_action=False, image_size=32)
        env.reset(seed=0)
        env.set_state(demo.attrs["final_state"])  # the state the last action led to
        np.testing.assert_array_equal(env.render_cameras()["agentview_image"], demo["next_obs/agentview_image"][-1])
        # low-dim observations after a step are read before robosuite's last physics substep lands (as every obs[t]
        # of a recording is): within a substep's motion of the state
        np.testing.assert_allclose(env.raw_obs()["object"], demo["next_obs/object"][-1], atol=1e-3)
        env.close()


def test_model_file_is_the_mujoco_model_the_states_belong_to(lift_file):
    import mujoco

    with h5py.File(lift_file) as f:
        model = mujoco.MjModel.from_xml_string(f["data/demo_1"].attrs["model_file"])
        states = f["data/demo_1/states"][:]
    data = mujoco.MjData(model)
    assert states.shape[1] == 1 + model.nq + model.nv  # robosuite's flat state: time, qpos, qvel
    env = RobomimicEnv("Lift", obs_type="state", abs_action=False)
    env.reset(seed=0)
    for t in (0, len(states) - 1):  # every body where robosuite's own model puts it
        data.qpos[:] = states[t, 1:1 + model.nq]
        mujoco.mj_forward(model, data)
        env.set_state(states[t])
        np.testing.assert_allclose(data.xpos, env.rs_env.sim.data.body_xpos, atol=1e-6)  # XML prints ~9 digits
        np.testing.assert_allclose(data.body("cube_main").xpos, env.raw_obs()["object"][:3], atol=1e-6)
    env.close()


# ---------------------------------------------------------------- the file's own controller configuration

def _with_controller(src, dst, scale_actions=1.0, **arm_settings):
    """A copy of ``src`` whose env_args record other arm-controller settings (and actions scaled to match)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        meta = json.loads(f["data"].attrs["env_args"])
        meta["env_kwargs"]["controller_configs"]["body_parts"]["right"].update(arm_settings)
        f["data"].attrs["env_args"] = json.dumps(meta)
        for name in f["data"]:
            f[f"data/{name}/actions"][:, :6] *= scale_actions  # the arm's 6-D delta; the gripper command stays
    return dst


def test_file_recorded_with_wider_action_limits_converts_to_the_same_goals(lift_file, tmp_path):
    # the same motions recorded by a controller whose limits are twice ours: every delta action is half as large
    wide = _with_controller(lift_file, tmp_path / "wide_limits.hdf5", scale_actions=0.5,
                            output_max=[0.1, 0.1, 0.1, 1.0, 1.0, 1.0], output_min=[-0.1, -0.1, -0.1, -1.0, -1.0, -1.0])
    write_abs_action_cache(lift_file, STATE_KEYS)
    write_abs_action_cache(wide, STATE_KEYS)
    reference = load_robomimic_replay_buffer(lift_file, STATE_KEYS, abs_action=True)
    converted = load_robomimic_replay_buffer(wide, STATE_KEYS, abs_action=True)
    np.testing.assert_allclose(converted.data["action"], reference.data["action"], atol=1e-9)
    ep = converted.get_episode(0)  # and the goals replay to the recorded cube pose
    env = RobomimicEnv("Lift", obs_type="state", abs_action=True)
    obs, _ = env.reset(options={"reset_to_state": ep["states"][0]})
    for a in ep["action"][:-1]:
        obs, *_ = env.step(a)
    np.testing.assert_allclose(obs["obs"][:3], ep["object"][-1][:3], atol=2e-3)
    env.close()


def test_file_with_other_controller_gains_is_refused_naming_the_settings_and_file(lift_file, tmp_path):
    path = _with_controller(lift_file, tmp_path / "stiff.hdf5", kp=300, input_ref_frame="world")
    with pytest.raises(ValueError) as err:
        write_abs_action_cache(path, STATE_KEYS)
    msg = str(err.value)
    assert "stiff.hdf5" in msg and "controller_configs.kp: recorded 300, ours 150" in msg
    assert "controller_configs.input_ref_frame: recorded 'world', ours 'base'" in msg


def test_delta_actions_recorded_with_other_limits_are_refused_when_kept_as_delta(lift_file, tmp_path):
    path = _with_controller(lift_file, tmp_path / "wide.hdf5", output_max=[0.1, 0.1, 0.1, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"wide\.hdf5.*controller_configs\.output_max.*abs_action=True"):
        check_delta_controller(path)


def test_public_v141_controller_layout_matches_ours():
    # robosuite 1.4's flat OSC_POSE config, as robomimic's v141 datasets record it
    v141 = {"robots": ["Panda"], "control_freq": 20, "controller_configs": {
        "type": "OSC_POSE", "input_max": 1, "input_min": -1, "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
        "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5], "kp": 150, "damping": 1, "impedance_mode": "fixed",
        "kp_limits": [0, 300], "damping_limits": [0, 10], "position_limits": None, "orientation_limits": None,
        "uncouple_pos_ori": True, "control_delta": True, "interpolation": None, "ramp_ratio": 0.2}}
    assert recorded_controller_differences(v141) == {}
    v141["controller_configs"]["control_delta"] = False
    assert recorded_controller_differences(v141) == {"controller_configs.input_type": ("absolute", "delta")}


def test_camera_frames_look_like_robosuites_own_cameras_as_robomimic_stores_them():
    """Our fast cameras against robosuite's native camera observations (what robomimic's converter stores, flipped
    upright): same state, small mean pixel error; the collision geoms robosuite hides must be hidden here too
    (drawn, they made the error 8-15 / 255)."""
    import robosuite as suite

    from envs.robomimic import robosuite_kwargs

    env = RobomimicEnv("Lift", obs_type="visual", abs_action=False, image_size=84)
    env.reset(seed=100000)
    kwargs = robosuite_kwargs("Lift", abs_action=False)
    name = kwargs.pop("env_name")
    for key in ("has_renderer", "has_offscreen_renderer", "use_camera_obs", "camera_names", "camera_heights",
                "camera_widths"):
        kwargs.pop(key, None)
    cameras = ["agentview", "robot0_eye_in_hand"]
    ref = suite.make(name, has_renderer=False, has_offscreen_renderer=True, use_camera_obs=True, camera_names=cameras,
                     camera_heights=84, camera_widths=84, **kwargs)
    ref.reset()
    ref.sim.set_state_from_flattened(env.rs_env.sim.get_state().flatten())
    ref.sim.forward()
    native = ref._get_observations(force_update=True)
    ours = env.render_cameras()
    for cam in cameras:
        error = np.abs(ours[f"{cam}_image"].astype(float) - native[f"{cam}_image"][::-1].astype(float)).mean()
        assert error < 3.0, f"{cam}: mean pixel error {error:.2f} / 255"
    ref.close()
    env.close()


def test_image_demos_rendered_by_an_older_camera_version_are_rendered_again(tmp_path):
    from envs.datasets import refresh_images
    from envs.experts.robomimic import RENDER_VERSION, generate_lift, stale_images

    path = tmp_path / "lift_images.hdf5"
    generate_lift(path, 1, render_images=True, image_size=24)
    with h5py.File(path, "r+") as f:
        assert f["data"].attrs["render_version"] == RENDER_VERSION
        current = f["data/demo_0/obs/agentview_image"][:]
        f["data/demo_0/obs/agentview_image"][...] = 0  # as if an older renderer had drawn it
        f["data"].attrs["render_version"] = RENDER_VERSION - 1
    refresh_images(path)
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["render_version"] == RENDER_VERSION
        np.testing.assert_array_equal(f["data/demo_0/obs/agentview_image"][:], current)
    before = path.stat().st_mtime_ns
    refresh_images(path)  # current: left alone
    assert path.stat().st_mtime_ns == before
    with h5py.File(path, "r+") as f:  # a file robomimic's tools wrote: never ours to re-render
        del f["data"].attrs["generated_by"], f["data/demo_0"].attrs["seed"]
        f["data"].attrs["render_version"] = RENDER_VERSION - 1
    assert stale_images(path) is None
