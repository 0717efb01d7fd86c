"""Franka Kitchen (Relay Policy Learning / D4RL, as Diffusion Policy benchmarks it) over gymnasium-robotics.

gymnasium-robotics' ``FrankaKitchen-v1`` supplies the MuJoCo model, the fixed initial state, the Franka's joint
bounds and noise amplitudes. This class owns the step so that the benchmark's variants live in one place:
- observation ``{"obs": (60,) float32}`` in the D4RL layout Diffusion Policy trains on (robot qpos 9, object qpos 21,
  30 zeros where D4RL put the goal) or ``obs_layout="native"`` (59,): robot qpos 9, qvel 9, object qpos 21, qvel 20;
- actions as the env takes them (9 joint velocities in [-1, 1], x2 rad/s) or, with ``abs_action=True``, absolute
  joint-position targets (DP's ``kitchen_lowdim_abs``), limited exactly like the original position-action robot:
  velocity bound +-10 rad/s from the last observed joint positions, then the position bounds;
- subtask bookkeeping as D4RL defines it: a subtask is done when ``||qpos[its joints] - goal|| < 0.3``; once done it
  stays counted. ``info["n_completed"]`` feeds the p1..p4 metrics, ``score = min(n_completed / 4, 1)``.
Like the original, the controller integrates from the NOISY last observation (the original's known quirk).
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.rendering import FastRenderer, check_render_mode

TASKS = ("microwave", "kettle", "bottom burner", "top burner", "light switch", "slide cabinet", "hinge cabinet")
# subtask -> indices into the FULL qpos (robot 0-8, objects 9-29) and its goal (D4RL's OBS_ELEMENT_* tables)
TASK_QPOS_INDICES = {
    "bottom burner": [11, 12],
    "top burner": [15, 16],
    "light switch": [17, 18],
    "slide cabinet": [19],
    "hinge cabinet": [20, 21],
    "microwave": [22],
    "kettle": [23, 24, 25, 26, 27, 28, 29],
}
TASK_GOALS = {
    "bottom burner": np.array([-0.88, -0.01]),
    "top burner": np.array([-0.92, -0.01]),
    "light switch": np.array([-0.69, -0.05]),
    "slide cabinet": np.array([0.37]),
    "hinge cabinet": np.array([0.0, 1.45]),
    "microwave": np.array([-0.75]),
    "kettle": np.array([-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]),
}
COMPLETION_THRESHOLD = 0.3
N_ROBOT = 9
OBS_DIMS = {"d4rl": 60, "native": 59}
ABS_VEL_BOUND = 10.0  # rad/s: the original position-action robot's velocity bound (franka_config.xml vel_bound)
DEFAULT_CAMERA = {"distance": 2.2, "azimuth": 70.0, "elevation": -35.0, "lookat": (-0.2, 0.5, 2.0)}


def task_distance(qpos: np.ndarray, task: str) -> float:
    return float(np.linalg.norm(np.asarray(qpos)[TASK_QPOS_INDICES[task]] - TASK_GOALS[task]))


def tasks_at_goal(qpos: np.ndarray) -> list[str]:
    """Subtasks whose joints are within the completion threshold of their goal in this state."""
    return [t for t in TASKS if task_distance(qpos, t) < COMPLETION_THRESHOLD]


class KitchenEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(
        self,
        obs_layout: str = "d4rl",
        abs_action: bool = False,
        max_steps: int = 280,
        n_success: int = 4,  # subtasks that make an episode a success (the benchmark's 4-task sequences)
        robot_noise_ratio: float = 0.01,
        object_noise_ratio: float = 0.0005,
        render_mode: str | None = "rgb_array",
        render_size: tuple[int, int] = (240, 360),  # (H, W), Diffusion Policy's kitchen video size
    ):
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import KitchenEnv as _Kitchen

        if obs_layout not in OBS_DIMS:
            raise ValueError(f"KitchenEnv: obs_layout must be one of {sorted(OBS_DIMS)}, got {obs_layout!r}")
        check_render_mode("KitchenEnv", render_mode)
        self._sim = _Kitchen()  # loads the model; we only use its robot's model/data/bounds, not its step
        robot = self._sim.robot_env
        self.model, self.data = robot.model, robot.data
        self.frame_skip, self.dt = robot.frame_skip, robot.dt
        self.init_qpos = np.array(self._sim.robot_env.init_qpos, dtype=np.float64)
        self.init_qvel = np.zeros(self.model.nv)
        self.pos_bound = robot.robot_pos_bound[:N_ROBOT].copy()
        self.vel_bound = robot.robot_vel_bound[:N_ROBOT].copy()
        self.pos_noise = robot_noise_ratio * robot.robot_pos_noise_amp[:N_ROBOT]
        self.vel_noise = robot_noise_ratio * robot.robot_vel_noise_amp[:N_ROBOT]
        # 21 object-qpos amplitudes, indexed as gymnasium-robotics does (the kettle has 7 qpos but 6 dofs)
        self.obj_pos_noise = object_noise_ratio * robot.robot_pos_noise_amp[N_ROBOT - 1:]
        self.obj_vel_noise = object_noise_ratio * robot.robot_vel_noise_amp[N_ROBOT:]  # 20 object qvel

        self.obs_layout, self.abs_action, self.max_steps, self.n_success = obs_layout, abs_action, max_steps, n_success
        self.render_mode, self.render_size = render_mode, tuple(render_size)
        self.observation_space = spaces.Dict(
            {"obs": spaces.Box(-np.inf, np.inf, shape=(OBS_DIMS[obs_layout],), dtype=np.float32)}
        )
        if abs_action:
            self.action_space = spaces.Box(
                self.pos_bound[:, 0].astype(np.float32), self.pos_bound[:, 1].astype(np.float32), dtype=np.float32
            )
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(N_ROBOT,), dtype=np.float32)
        self._renderer = None
        self._t = 0
        self._completed: list[str] = []
        self._last_robot_qpos = self.init_qpos[:N_ROBOT].copy()
        self._set_state(np.concatenate([self.init_qpos, self.init_qvel]))  # render() works before the first reset

    # ---------------------------------------------------------------- state
    def get_state(self) -> np.ndarray:
        """Simulator state (nq + nv = 59,): full qpos then full qvel."""
        return np.concatenate([self.data.qpos, self.data.qvel]).copy()

    def _set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        nq, nv = self.model.nq, self.model.nv
        if state.shape != (nq + nv,):
            raise ValueError(f"KitchenEnv reset_to_state: expected qpos+qvel of shape ({nq + nv},), got {state.shape}")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = state[:nq]
        self.data.qvel[:] = state[nq:]
        self.data.ctrl[:] = state[:N_ROBOT]  # hold the current pose until the first action arrives
        mujoco.mj_forward(self.model, self.data)

    def _observe(self) -> dict[str, np.ndarray]:
        qpos, qvel, rng = self.data.qpos, self.data.qvel, self.np_random
        robot_qpos = qpos[:N_ROBOT] + self.pos_noise * rng.uniform(-1, 1, N_ROBOT)
        robot_qvel = qvel[:N_ROBOT] + self.vel_noise * rng.uniform(-1, 1, N_ROBOT)
        obj_qpos = qpos[N_ROBOT:] + self.obj_pos_noise * rng.uniform(-1, 1, len(self.obj_pos_noise))
        obj_qvel = qvel[N_ROBOT:] + self.obj_vel_noise * rng.uniform(-1, 1, len(self.obj_vel_noise))
        self._last_robot_qpos = robot_qpos  # the controller integrates from what the robot "saw"
        if self.obs_layout == "d4rl":
            obs = np.concatenate([robot_qpos, obj_qpos, np.zeros(30)])
        else:
            obs = np.concatenate([robot_qpos, robot_qvel, obj_qpos, obj_qvel])
        return {"obs": obs.astype(np.float32)}

    def _info(self, new: list[str]) -> dict:
        n = len(self._completed)
        return {
            "n_completed": n,
            "completed_tasks": list(self._completed),
            "step_completions": new,
            "score": float(min(n / self.n_success, 1.0)),
            "is_success": n >= self.n_success,
        }

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        state = (options or {}).get("reset_to_state")
        self._set_state(np.concatenate([self.init_qpos, self.init_qvel]) if state is None else state)
        self._t = 0
        self._completed = []
        self._update_completed()
        return self._observe(), self._info([])

    def _update_completed(self) -> list[str]:
        new = [t for t in tasks_at_goal(self.data.qpos) if t not in self._completed]
        self._completed.extend(new)
        return new

    def joint_targets(self, action: np.ndarray) -> np.ndarray:
        """The position targets (9,) this action sends to the actuators, given the last observation."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (N_ROBOT,):
            raise ValueError(f"KitchenEnv.step: expected an action of shape ({N_ROBOT},), got {action.shape}")
        last = self._last_robot_qpos
        if self.abs_action:
            vel = np.clip((action - last) / self.dt, -ABS_VEL_BOUND, ABS_VEL_BOUND)
        else:
            vel = np.clip(np.clip(action, -1.0, 1.0) * 2.0, self.vel_bound[:, 0], self.vel_bound[:, 1])
        return np.clip(last + vel * self.dt, self.pos_bound[:, 0], self.pos_bound[:, 1])

    def step(self, action):
        self.data.ctrl[:] = self.joint_targets(action)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._t += 1
        new = self._update_completed()
        obs = self._observe()
        terminated = len(self._completed) == len(TASKS)
        truncated = self._t >= self.max_steps
        return obs, float(len(new)), terminated, truncated, self._info(new)

    def render(self):
        if self.render_mode is None:
            return None
        if self._renderer is None:
            h, w = self.render_size
            self._renderer = FastRenderer(self.model, h, w)
            self._camera = mujoco.MjvCamera()
            self._camera.distance = DEFAULT_CAMERA["distance"]
            self._camera.azimuth = DEFAULT_CAMERA["azimuth"]
            self._camera.elevation = DEFAULT_CAMERA["elevation"]
            self._camera.lookat[:] = DEFAULT_CAMERA["lookat"]
        return self._renderer.render(self.data, self._camera)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
