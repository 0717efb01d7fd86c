"""Lift, Can and ToolHang (robosuite 1.5.2, Panda, OSC_POSE at 20 Hz) with Diffusion Policy's observation layout.

- obs_type "state":  {"obs": concat(object, robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos)}  (19 / 23 / 53-D)
- obs_type "visual": {<camera>_image: uint8 (H, W, 3), robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos}
  with no object state (as robomimic's image datasets).
- abs_action False: robomimic's 7-D delta [dpos / 0.05 m, axis-angle drot / 0.5 rad, gripper], world axes.
  abs_action True: Diffusion Policy's 10-D [world position 3, rotation-6D 6, gripper 1] of the grip site.

Images are rendered by our own mujoco.Renderer with MSAA, shadows and reflections off (the expensive part of
rendering on a CPU, docs/notes/robomimic.md); demos re-rendered from stored states use the same function, so training and
evaluation images match. mujoco.Renderer returns rows top-down, so images are the right way up.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from drifting_policy.utils.rotation import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)
from envs.rendering import FastRenderer, check_render_mode

# robosuite env name -> defaults (aliases let task configs use the benchmark's short names)
TASKS = {
    "Lift": {"max_steps": 400, "cameras": ("agentview", "robot0_eye_in_hand"), "image_size": 84},
    "PickPlaceCan": {"max_steps": 400, "cameras": ("agentview", "robot0_eye_in_hand"), "image_size": 84},
    "ToolHang": {"max_steps": 700, "cameras": ("sideview", "robot0_eye_in_hand"), "image_size": 240},
}
ALIASES = {"lift": "Lift", "can": "PickPlaceCan", "tool_hang": "ToolHang"}
OBJECT_DIM = {"Lift": 10, "PickPlaceCan": 14, "ToolHang": 44}
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
PROPRIO_DIMS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
STATE_KEYS = ("object", *PROPRIO_KEYS)  # Diffusion Policy's low-dim obs order
MODEL_SEED = 0


def canonical_env_name(env_name: str) -> str:
    name = ALIASES.get(env_name, env_name)
    if name not in TASKS:
        raise ValueError(f"unknown robomimic env '{env_name}'; expected one of {sorted(TASKS)} or {sorted(ALIASES)}")
    return name


def controller_config(abs_action: bool) -> dict:
    """Panda's default BASIC composite controller (OSC_POSE arm); absolute targets read in the world frame."""
    from robosuite.controllers import load_composite_controller_config

    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    if abs_action:
        arm = cfg["body_parts"]["right"] if "right" in cfg["body_parts"] else cfg["body_parts"]["arms"]["right"]
        arm["input_type"] = "absolute"
        arm["input_ref_frame"] = "world"
    return cfg


def robosuite_kwargs(env_name: str, abs_action: bool = False) -> dict:
    """The keyword arguments of suite.make (stored as env_args in our HDF5 files)."""
    return {
        "env_name": canonical_env_name(env_name),
        "robots": "Panda",
        "controller_configs": controller_config(abs_action),
        "control_freq": 20,
        "reward_shaping": False,
        "use_object_obs": True,
        "use_camera_obs": False,  # cameras are rendered by envs.rendering.FastRenderer
        "has_renderer": False,
        "has_offscreen_renderer": False,
        "ignore_done": True,
        "hard_reset": False,  # keeps one MjModel, so our renderers stay valid across resets
    }


# Arm-controller settings that only say how a delta action is scaled into a goal offset: a recording made with other
# values converts faithfully to world goals by reading its actions with its own values.
ARM_LIMIT_KEYS = ("input_max", "input_min", "output_max", "output_min")
# robosuite 1.4 names (the public v141 files) -> robosuite 1.5 names
_LEGACY_ARM_KEYS = {"damping": "damping_ratio", "damping_limits": "damping_ratio_limits"}


def arm_controller_config(controller_configs: dict) -> dict:
    """The right arm's controller settings, from robosuite 1.5's composite layout or 1.4's flat one, in 1.5 names."""
    parts = controller_configs.get("body_parts")
    if parts is None:
        arm = dict(controller_configs)
    else:
        arm = dict(parts["right"] if "right" in parts else parts.get("arms", {}).get("right", {}))
    for old, new in _LEGACY_ARM_KEYS.items():
        if old in arm:
            arm.setdefault(new, arm.pop(old))
    if "control_delta" in arm:
        arm.setdefault("input_type", "delta" if arm.pop("control_delta") else "absolute")
    arm.pop("gripper", None)  # the gripper's command is stored as recorded and read as recorded
    return arm


def _same(a, b) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=1e-12))
    except (TypeError, ValueError):
        return a == b


def recorded_controller_differences(recorded_env_kwargs: dict) -> dict[str, tuple]:
    """{setting: (recorded, ours)} for every controller setting the recording has and our delta env sets otherwise.

    Settings the recording does not name are not compared (robosuite fills them with the defaults we use).
    """
    ours_kwargs = robosuite_kwargs("Lift", abs_action=False)
    diffs = {}
    if "control_freq" in recorded_env_kwargs and not _same(recorded_env_kwargs["control_freq"], ours_kwargs["control_freq"]):
        diffs["control_freq"] = (recorded_env_kwargs["control_freq"], ours_kwargs["control_freq"])
    robots = recorded_env_kwargs.get("robots", ours_kwargs["robots"])
    if (list(robots) if isinstance(robots, list | tuple) else [robots]) != [ours_kwargs["robots"]]:
        diffs["robots"] = (robots, ours_kwargs["robots"])
    if "controller_configs" in recorded_env_kwargs:
        recorded = arm_controller_config(recorded_env_kwargs["controller_configs"] or {})
        ours = arm_controller_config(ours_kwargs["controller_configs"])
        diffs |= {f"controller_configs.{k}": (recorded[k], ours[k]) for k in sorted(recorded.keys() & ours.keys())
                  if not _same(recorded[k], ours[k])}
    return diffs


def controller_config_for_recording(recorded_env_kwargs: dict, allow_other_limits: bool = True) -> dict:
    """Our delta controller config with the recording's action limits; ValueError naming every setting that differs
    in a way a conversion cannot honour (gains, frames, control rate, ...), or any limit when ``allow_other_limits``
    is False (delta actions kept as recorded must mean the same motion in our env)."""
    diffs = recorded_controller_differences(recorded_env_kwargs)
    limit_keys = {f"controller_configs.{k}" for k in ARM_LIMIT_KEYS}
    refused = {k: v for k, v in diffs.items() if allow_other_limits is False or k not in limit_keys}
    if refused:
        listed = "; ".join(f"{k}: recorded {r!r}, ours {o!r}" for k, (r, o) in refused.items())
        hint = (" (action limits alone are honoured when converting to absolute actions: abs_action=True)"
                if refused.keys() <= limit_keys else "")
        raise ValueError(f"env_args.env_kwargs differ from our Panda OSC_POSE delta controller in {sorted(refused)}: "
                         f"{listed}; the demos cannot be read faithfully{hint}")
    cfg = controller_config(abs_action=False)
    recorded_arm = arm_controller_config(recorded_env_kwargs.get("controller_configs") or {})
    cfg["body_parts"]["right"].update({k: recorded_arm[k] for k in ARM_LIMIT_KEYS if k in recorded_arm})
    return cfg


def make_robosuite(env_name: str, abs_action: bool = False, seed: int | None = None,
                   recorded_env_kwargs: dict | None = None, allow_other_limits: bool = True):
    """robosuite's env with our settings; ``recorded_env_kwargs`` (a robomimic file's env_args.env_kwargs) builds
    the delta env that file was recorded with, or refuses it (see controller_config_for_recording)."""
    import robosuite as suite

    kwargs = robosuite_kwargs(env_name, abs_action)
    name = kwargs.pop("env_name")
    if recorded_env_kwargs is not None:
        if abs_action:
            raise ValueError("recorded_env_kwargs describe a delta controller; build it with abs_action=False")
        kwargs["controller_configs"] = controller_config_for_recording(recorded_env_kwargs, allow_other_limits)
    # Model building draws from env.rng (e.g. Lift's cube size in [0.020, 0.022] m): a fixed seed gives every
    # process the same model, so stored states restore exactly; episodes are re-seeded in reset().
    return suite.make(name, horizon=10_000, seed=MODEL_SEED if seed is None else seed, **kwargs)


def reseed(rs_env, seed: int) -> None:
    """Re-seed robosuite in place: the placement samplers and robot hold references to env.rng."""
    rs_env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state


class RobomimicEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        env_name: str = "Lift",
        obs_type: str = "state",
        abs_action: bool = True,
        camera_names: list[str] | None = None,
        image_size: int | None = None,
        max_steps: int | None = None,
        render_mode: str | None = "rgb_array",  # render() builds its camera lazily: no cost unless called
        render_size: int = 256,
        render_camera: str | None = None,
        terminate_on_success: bool = False,
    ):
        self.env_name = canonical_env_name(env_name)
        if obs_type not in ("state", "visual"):
            raise ValueError(f"obs_type must be 'state' or 'visual', got '{obs_type}'")
        check_render_mode("RobomimicEnv", render_mode)
        task = TASKS[self.env_name]
        self.obs_type, self.abs_action, self.render_mode = obs_type, bool(abs_action), render_mode
        self.camera_names = list(camera_names or task["cameras"])
        self.image_size = int(image_size or task["image_size"])
        self.max_steps = int(max_steps or task["max_steps"])
        self.render_size, self.render_camera = render_size, render_camera or self.camera_names[0]
        # DP runs every episode to the horizon (score = max over the episode); stopping at success gives the same
        # score in fewer steps
        self.terminate_on_success = bool(terminate_on_success)

        self.rs_env = make_robosuite(self.env_name, self.abs_action)
        model = self.rs_env.sim.model._model
        self._cameras = FastRenderer(model, self.image_size, self.image_size, hide_geom_groups=(0,)) if obs_type == "visual" else None
        self._video = None  # built lazily: most rollouts never render a video frame
        self._t = 0
        self._raw: dict[str, np.ndarray] = {}

        if obs_type == "state":
            dim = OBJECT_DIM[self.env_name] + 9
            self.observation_space = spaces.Dict({"obs": spaces.Box(-np.inf, np.inf, (dim,), np.float32)})
        else:
            s = self.image_size
            obs = {f"{c}_image": spaces.Box(0, 255, (s, s, 3), np.uint8) for c in self.camera_names}
            obs |= {k: spaces.Box(-np.inf, np.inf, (PROPRIO_DIMS[k],), np.float32) for k in PROPRIO_KEYS}
            self.observation_space = spaces.Dict(obs)
        if self.abs_action:
            # world-frame grip-site position (generous workspace box), rotation 6D, gripper
            low = np.array([-1.0, -1.0, 0.5] + [-1.0] * 7, np.float32)
            high = np.array([1.0, 1.0, 1.6] + [1.0] * 7, np.float32)
            self.action_space = spaces.Box(low, high, dtype=np.float32)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    # ---------------------------------------------------------------- observations
    def raw_obs(self) -> dict[str, np.ndarray]:
        """robomimic-named low-dim observations of the current state (object, eef pos/quat, gripper qpos)."""
        o = self._raw
        return {
            "object": np.asarray(o["object-state"], np.float32),
            **{k: np.asarray(o[k], np.float32) for k in PROPRIO_KEYS},
        }

    def render_cameras(self) -> dict[str, np.ndarray]:
        data = self.rs_env.sim.data._data
        return {f"{c}_image": self._cameras.render(data, c) for c in self.camera_names}

    def _obs(self) -> dict[str, np.ndarray]:
        raw = self.raw_obs()
        if self.obs_type == "state":
            return {"obs": np.concatenate([raw[k] for k in STATE_KEYS]).astype(np.float32)}
        return {**self.render_cameras(), **{k: raw[k] for k in PROPRIO_KEYS}}

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            reseed(self.rs_env, seed)
        self._raw = self.rs_env.reset()
        state = (options or {}).get("reset_to_state")
        if state is not None:
            self.set_state(state)
        self._t = 0
        return self._obs(), {"score": 0.0, "is_success": False}

    def set_state(self, state: np.ndarray) -> None:
        """Restore a flat MuJoCo state (time, qpos, qvel) as stored in robomimic HDF5 'states'.

        Exact for an episode's first state, which is what train-init resets use. Two pieces of controller state are
        not MuJoCo state: the OSC null-space target (the arm's joint positions at reset, set here from the restored
        state) and the gripper's command ramp (zero after reset, as at an episode start).
        """
        sim = self.rs_env.sim
        state = np.asarray(state, dtype=np.float64).ravel()
        expected = sim.get_state().flatten().shape[0]
        if state.shape[0] != expected:
            raise ValueError(f"reset_to_state: {self.env_name} has a {expected}-D flat MuJoCo state, got {state.shape[0]}")
        sim.set_state_from_flattened(state)
        sim.forward()
        ctrl = self.rs_env.robots[0].part_controllers["right"]
        ctrl.update(force=True)
        ctrl.update_initial_joints(ctrl.joint_pos)
        self._raw = self.rs_env._get_observations(force_update=True)

    def get_state(self) -> np.ndarray:
        return np.asarray(self.rs_env.sim.get_state().flatten())

    def to_robosuite_action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"{self.env_name}: expected a {self.action_space.shape[0]}-D action, got {action.shape}")
        if not self.abs_action:
            return action
        rotvec = matrix_to_axis_angle(rot6d_to_matrix(action[3:9]))
        return np.concatenate([action[:3], rotvec, action[9:]])

    def step(self, action):
        self._raw, _, _, _ = self.rs_env.step(self.to_robosuite_action(action))
        self._t += 1
        success = bool(self.rs_env._check_success())
        info = {"score": float(success), "is_success": success}
        return self._obs(), float(success), success and self.terminate_on_success, self._t >= self.max_steps, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._video is None:
            self._video = FastRenderer(self.rs_env.sim.model._model, self.render_size, self.render_size,
                                       hide_geom_groups=(0,))
        return self._video.render(self.rs_env.sim.data._data, self.render_camera)

    def close(self):
        for cams in (self._cameras, self._video):
            if cams is not None:
                cams.close()
        self._cameras = self._video = None
        self.rs_env.close()


def grip_site_pose(rs_env) -> tuple[np.ndarray, np.ndarray]:
    """World position and rotation matrix of the controller's reference site (the grip site)."""
    ctrl = rs_env.robots[0].part_controllers["right"]
    ctrl.update(force=True)
    return np.array(ctrl.ref_pos), np.array(ctrl.ref_ori_mat)


def delta_to_world_goal(rs_env, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The world-frame goal pose the delta OSC controller sets for ``delta`` (7-D) from the current sim state.

    Mirrors robosuite's "achieved" goal update in the base frame: goal = current pose moved by the scaled delta,
    expressed in the base frame, mapped back to the world.
    """
    ctrl = rs_env.robots[0].part_controllers["right"]
    ctrl.update(force=True)
    scaled = ctrl.scale_action(np.clip(np.asarray(delta[:6], np.float64), ctrl.input_min, ctrl.input_max))
    r_base = np.asarray(ctrl.origin_ori)
    pos = np.asarray(ctrl.ref_pos) + r_base @ scaled[:3]
    rot = r_base @ axis_angle_to_matrix(scaled[3:6]) @ r_base.T @ np.asarray(ctrl.ref_ori_mat)
    return pos, rot


class AbsActionConverter:
    """Delta actions -> Diffusion Policy's 10-D absolute actions [world pos 3, rotation 6D 6, gripper 1] for one
    robomimic task: restore each stored state, hand the delta action to the delta OSC controller and read the
    world-frame goal pose it would servo to (``delta_to_world_goal``)."""

    def __init__(self, env_name: str, recorded_env_kwargs: dict | None = None):
        """``recorded_env_kwargs``: the file's env_args.env_kwargs, whose action limits are honoured (any other
        controller difference raises ValueError naming it)."""
        self.env_name = canonical_env_name(env_name)
        self.rs_env = make_robosuite(self.env_name, abs_action=False, recorded_env_kwargs=recorded_env_kwargs or {},
                                     allow_other_limits=True)
        self.state_dim = self.rs_env.sim.get_state().flatten().shape[0]

    def __call__(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(T, S) states, (T, 7) delta actions -> (T, 10)."""
        out = np.empty((len(actions), 10), dtype=np.float64)
        for t, (state, action) in enumerate(zip(states, actions, strict=True)):
            self.rs_env.sim.set_state_from_flattened(state)
            self.rs_env.sim.forward()
            pos, rot = delta_to_world_goal(self.rs_env, action)
            out[t, :3], out[t, 3:9], out[t, 9] = pos, matrix_to_rot6d(rot), action[6]
        return out

    def close(self) -> None:
        self.rs_env.close()
