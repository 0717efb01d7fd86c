"""BlockPush: push two blocks into two target zones with an xArm6 (IBC's multimodal task, as Diffusion Policy uses it).

Facts kept from the original env (IBC ``block_pushing_multimodal.py``, vendored by Diffusion Policy):
- 240 Hz physics, 10 Hz control; the arm's link 6 is held at z = 0.06 pointing down, solved by pybullet IK each step
  and tracked by joint position control; a cylinder is attached to link 6 by a fixed constraint (max force 50).
- action = xy of the effector target, absolute (DP's ``abs_action``) or a delta added to the previous target; the
  target is clipped to the workspace x in [0.15, 0.7], y in [-0.5, 0.5]. The effector starts at (0.3, -0.4).
- blocks: x = 0.4 + U(-0.1, 0.1), y = -0.2 + U(-0.15, 0.15), resampled until the two differ by > 0.1 in x (the
  original compares x only); yaw ~ U(1, pi) (the original calls ``uniform(pi)``, i.e. low = pi, high = 1).
- targets: x = 0.4 +- 0.12 (side drawn at random) + U(-0.005, 0.005), y = 0.2 + U(-0.0075, 0.0075),
  yaw = pi + U(-pi/30, pi/30). Observed yaws are ``euler_z % pi``, as in the original.
- a block is in a target within 0.05 m of its centre. Reward 0.49 on the step a block first enters a target (per
  block-target pair), replaced by 0.51 when both blocks sit in different targets, which also ends the episode
  (Diffusion Policy's p1/p2 read these values: p1 = some block entered a target, p2 = both in distinct targets).
The blocks' and the effector's meshes are recreated as primitives (4 cm cubes, a 1 cm-radius cylinder); the xArm6
URDF is the one pybullet_data ships (the original loads the same file).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
from gymnasium import spaces
from pybullet_utils import bullet_client

from envs.rendering import check_render_mode

WORKSPACE_LOW = np.array([0.15, -0.5])
WORKSPACE_HIGH = np.array([0.7, 0.5])
EFFECTOR_HEIGHT = 0.06
EFFECTOR_START = (0.3, -0.4)
EFFECTOR_RADIUS = 0.01
EFFECTOR_LENGTH = 0.05        # reaches from link 6 (z 0.06) down to z 0.01, below the blocks' tops (0.04)
BLOCK_HALF = 0.02
GOAL_TOLERANCE = 0.05
SIM_HZ, CONTROL_HZ = 240, 10
# Joint angles that put link 6 at (0.3, -0.4, 0.07) pointing down (the original's INITIAL_JOINT_POSITIONS),
# so reset never depends on an IK solve from an arbitrary pose.
INITIAL_JOINTS = (-0.9254632489674508, 0.6990770671568564, -1.106629064060494,
                  0.0006653351931553931, 0.3987969742311386, -4.063402065624296)
DOWN = pybullet.getQuaternionFromEuler((0.0, math.pi, 0.0))

# Layout of the 16-D observation (Diffusion Policy's flattened dict order).
OBS_BLOCK, OBS_BLOCK2, OBS_EFFECTOR, OBS_EFFECTOR_TARGET = slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)
OBS_TARGET, OBS_TARGET2 = slice(10, 13), slice(13, 16)
OBS_DIM = 16
# get_state() layout: 4 bodies (2 blocks, 2 targets) x (pos 3, quat 4, lin vel 3, ang vel 3), effector body
# (13), 6 joint angles + 6 joint velocities, effector target xy (2), first-entry flags per block-target pair (4),
# the block that entered a target first (1; -1 none yet).
STATE_DIM = 4 * 13 + 13 + 12 + 2 + 4 + 1


def _yaw(quat) -> float:
    return pybullet.getEulerFromQuaternion(quat)[2] % math.pi


def mode_statistics(modes: list[dict]) -> dict:
    """Mode split over episodes, each a dict with first_block, block0_target, block1_target (episode_modes' output,
    or a rollout's final info): the fraction pushing each block first and each block -> target assignment
    ("b0t0_b1t1": block i in target i; "b0t1_b1t0": crossed; "other": not both blocks in distinct targets)."""
    if not modes:
        raise ValueError("mode_statistics: no episodes")
    n = len(modes)
    frac = lambda pred: sum(bool(pred(m)) for m in modes) / n
    assignment = lambda m: (m["block0_target"], m["block1_target"])
    return {
        "first_block0": frac(lambda m: m["first_block"] == 0),
        "first_block1": frac(lambda m: m["first_block"] == 1),
        "first_none": frac(lambda m: m["first_block"] == -1),
        "b0t0_b1t1": frac(lambda m: assignment(m) == (0, 1)),
        "b0t1_b1t0": frac(lambda m: assignment(m) == (1, 0)),
        "other": frac(lambda m: assignment(m) not in ((0, 1), (1, 0))),
    }


class BlockPushEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    # the env contract's hook for evaluation (envs/README.md): the module-level function
    mode_statistics = staticmethod(mode_statistics)

    def __init__(self, abs_action: bool = True, max_steps: int = 350, render_mode: str | None = "rgb_array",
                 render_size: tuple[int, int] = (192, 256)):
        check_render_mode("BlockPushEnv", render_mode)
        self.abs_action, self.max_steps, self.render_mode = abs_action, max_steps, render_mode
        self.render_size = tuple(render_size)
        self.observation_space = spaces.Dict({"obs": spaces.Box(-5.0, 5.0, (OBS_DIM,), np.float32)})
        if abs_action:
            self.action_space = spaces.Box(WORKSPACE_LOW.astype(np.float32), WORKSPACE_HIGH.astype(np.float32))
        else:
            self.action_space = spaces.Box(-0.1, 0.1, (2,), np.float32)
        self._build_scene()

    # ------------------------------------------------------------------ scene
    def _build_scene(self) -> None:
        c = self._client = bullet_client.BulletClient(pybullet.DIRECT)
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.8)
        c.setTimeStep(1.0 / SIM_HZ)
        c.loadURDF("plane.urdf", [0, 0, -0.001])
        workspace = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=[0.3, 0.55, 0.0005],
                                        rgbaColor=[0.9, 0.9, 0.85, 1])
        c.createMultiBody(0, -1, workspace, [0.42, 0, 0])
        self._arm = c.loadURDF("xarm/xarm6_robot.urdf", [0, 0, 0], useFixedBase=True)
        self._joints = [i for i in range(c.getNumJoints(self._arm))
                        if c.getJointInfo(self._arm, i)[2] == pybullet.JOINT_REVOLUTE]
        for j, q in zip(self._joints, INITIAL_JOINTS, strict=True):
            c.resetJointState(self._arm, j, q)
        self._link = 6
        pos, orn = c.getLinkState(self._arm, self._link)[:2]
        # The cylinder hangs below link 6 (the link's z axis points down), like the original's suction head.
        shape = dict(radius=EFFECTOR_RADIUS, collisionFramePosition=[0, 0, EFFECTOR_LENGTH / 2])
        col = c.createCollisionShape(pybullet.GEOM_CYLINDER, height=EFFECTOR_LENGTH, **shape)
        vis = c.createVisualShape(pybullet.GEOM_CYLINDER, length=EFFECTOR_LENGTH, rgbaColor=[0.2, 0.2, 0.2, 1],
                                  visualFramePosition=[0, 0, EFFECTOR_LENGTH / 2], radius=EFFECTOR_RADIUS)
        self._effector = c.createMultiBody(0.1, col, vis, pos, orn)
        cid = c.createConstraint(self._arm, self._link, self._effector, -1, pybullet.JOINT_FIXED, (0, 0, 0),
                                 (0, 0, 0), (0, 0, 0))
        c.changeConstraint(cid, maxForce=50)
        for link in range(-1, c.getNumJoints(self._arm)):
            c.setCollisionFilterPair(self._arm, self._effector, link, -1, 0)
        self._blocks = []
        for rgba in ([0.3, 0.4, 1.0, 1], [1.0, 0.45, 0.7, 1]):
            col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3)
            vis = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3, rgbaColor=rgba)
            block = c.createMultiBody(0.01, col, vis, [0.4, 0, BLOCK_HALF])
            c.changeDynamics(block, -1, lateralFriction=0.5, rollingFriction=0.0001)
            self._blocks.append(block)
        self._targets = []
        for rgba in ([0.2, 0.8, 0.3, 1], [0.2, 0.7, 0.7, 1]):  # green target 0, teal target 1
            vis = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=[GOAL_TOLERANCE, GOAL_TOLERANCE, 0.0005],
                                      rgbaColor=rgba)
            self._targets.append(c.createMultiBody(0, -1, vis, [0.4, 0.2, 0.001]))
        self._saved = c.saveState()
        self._target_xy = np.array(EFFECTOR_START)
        self._entered = np.zeros((2, 2), bool)
        self._first_block = -1
        self._t = 0

    def close(self) -> None:
        if getattr(self, "_client", None) is not None:
            self._client.disconnect()
            self._client = None

    # ------------------------------------------------------------------ control
    def _drive_effector(self, xy: np.ndarray) -> None:
        self._target_xy = np.clip(np.asarray(xy, np.float64), WORKSPACE_LOW, WORKSPACE_HIGH)
        c = self._client
        current = [s[0] for s in c.getJointStates(self._arm, self._joints)]
        # Rest pose = the current arm with the first two joints at 0 (the original's null-space choice).
        q = c.calculateInverseKinematics(
            self._arm, self._link, [*self._target_xy, EFFECTOR_HEIGHT], DOWN, lowerLimits=[-17] * 6,
            upperLimits=[17] * 6, jointRanges=[17] * 6, restPoses=[0, 0, *current[2:]], maxNumIterations=100,
            residualThreshold=1e-10)
        c.setJointMotorControlArray(self._arm, self._joints, pybullet.POSITION_CONTROL, targetPositions=q,
                                    forces=[5 * 240.0] * 6)

    def _simulate(self, n: int) -> None:
        for _ in range(n):
            self._client.stepSimulation()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._client.restoreState(self._saved)
        self._entered[:] = False
        self._first_block = -1
        self._t = 0
        state = (options or {}).get("reset_to_state")
        if state is not None:
            self._restore(np.asarray(state, np.float64))
        else:
            self._drive_effector(EFFECTOR_START)
            blocks, targets = self._sample_layout()
            self._place(blocks, targets)
            self._simulate(100)  # settle the arm at z = 0.06 and the blocks on the floor, as the original does
        obs = self._obs()
        if state is None or len(state) == OBS_DIM:
            # A new episode: a block that starts inside a target does not earn its entry reward later.
            # (A full get_state() vector carries its own reward flags.)
            self._update_entries(obs["obs"])
        return obs, self._info(obs["obs"])

    def _sample_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """Block and target (x, y, yaw) rows, drawn as the original env draws them."""
        rng = self.np_random
        while True:
            blocks = np.stack([[0.4 + rng.uniform(-0.1, 0.1), -0.2 + rng.uniform(-0.15, 0.15), rng.uniform(1, math.pi)]
                               for _ in range(2)])
            if abs(blocks[0, 0] - blocks[1, 0]) > 0.1:
                break
        side = rng.choice([-1.0, 1.0]) * 0.12
        targets = np.stack([[0.4 + s + rng.uniform(-0.005, 0.005), 0.2 + rng.uniform(-0.0075, 0.0075),
                             math.pi + rng.uniform(-math.pi / 30, math.pi / 30)] for s in (side, -side)])
        return blocks, targets

    def _place(self, blocks: np.ndarray, targets: np.ndarray) -> None:
        c = self._client
        for body, (x, y, yaw) in zip(self._blocks, blocks, strict=True):
            c.resetBasePositionAndOrientation(body, [x, y, BLOCK_HALF], pybullet.getQuaternionFromEuler((0, 0, yaw)))
        for body, (x, y, yaw) in zip(self._targets, targets, strict=True):
            c.resetBasePositionAndOrientation(body, [x, y, 0.001], pybullet.getQuaternionFromEuler((0, 0, yaw)))

    def step(self, action):
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"BlockPushEnv.step: expected a finite action of shape (2,), got {action!r}")
        self._drive_effector(action if self.abs_action else self._target_xy + action)
        self._simulate(SIM_HZ // CONTROL_HZ)
        self._t += 1
        obs = self._obs()
        n_new = self._update_entries(obs["obs"])
        info = self._info(obs["obs"])
        reward = 0.51 if info["is_success"] else 0.49 * n_new
        return obs, reward, info["is_success"], self._t >= self.max_steps and not info["is_success"], info

    def _update_entries(self, obs: np.ndarray) -> int:
        dist = block_target_distances(obs)
        new = (dist < GOAL_TOLERANCE) & ~self._entered
        self._entered |= new
        inside = np.flatnonzero(dist.min(axis=1) < GOAL_TOLERANCE)
        if self._first_block < 0 and len(inside):
            self._first_block = int(inside[0])  # both on the same step: block 0, as episode_modes decides
        return int(new.sum())

    def _info(self, obs: np.ndarray) -> dict:
        """Score terms plus the episode's mode so far (the keys of episode_modes, for mode_statistics)."""
        n = n_completed(obs)
        t0, t1 = block_targets(obs)
        return {"n_completed": n, "score": n / 2.0, "is_success": n == 2, "first_block": self._first_block,
                "block0_target": t0, "block1_target": t1}

    def _obs(self) -> dict:
        c = self._client
        parts = []
        for body in self._blocks:
            pos, quat = c.getBasePositionAndOrientation(body)
            parts += [pos[0], pos[1], _yaw(quat)]
        parts += list(c.getLinkState(self._arm, self._link)[0][:2]) + list(self._target_xy)
        for body in self._targets:
            pos, quat = c.getBasePositionAndOrientation(body)
            parts += [pos[0], pos[1], _yaw(quat)]
        return {"obs": np.asarray(parts, np.float32)}

    # ------------------------------------------------------------------ states
    def get_state(self) -> np.ndarray:
        """Everything that determines the future: body poses and velocities, joints, the effector target, and
        which block-target pairs were already rewarded. Restore it with reset(options={"reset_to_state": s})."""
        c = self._client
        parts = []
        for body in [*self._blocks, *self._targets, self._effector]:
            pos, quat = c.getBasePositionAndOrientation(body)
            lin, ang = c.getBaseVelocity(body)
            parts += [*pos, *quat, *lin, *ang]
        states = c.getJointStates(self._arm, self._joints)
        parts += [s[0] for s in states] + [s[1] for s in states] + list(self._target_xy)
        parts += self._entered.astype(float).ravel().tolist() + [self._first_block]
        return np.asarray(parts, np.float64)

    def _restore(self, state: np.ndarray) -> None:
        """Restore a get_state() vector exactly, or an initial layout from a 16-D observation (the first
        observation of a Diffusion Policy demo: blocks and targets where it says, arm settled at the start)."""
        c = self._client
        if state.shape == (OBS_DIM,):
            self._drive_effector(EFFECTOR_START)
            self._place(state[[0, 1, 2, 3, 4, 5]].reshape(2, 3), state[10:16].reshape(2, 3))
            self._simulate(100)
            return
        if state.shape != (STATE_DIM,):
            raise ValueError(f"BlockPushEnv reset_to_state: expected a ({STATE_DIM},) get_state() vector or a "
                             f"({OBS_DIM},) observation, got shape {state.shape}")
        for k, body in enumerate([*self._blocks, *self._targets, self._effector]):
            s = state[13 * k: 13 * (k + 1)]
            c.resetBasePositionAndOrientation(body, s[:3], s[3:7])
            c.resetBaseVelocity(body, s[7:10], s[10:13])
        q, dq = state[65:71], state[71:77]
        for j, qj, dqj in zip(self._joints, q, dq, strict=True):
            c.resetJointState(self._arm, j, qj, dqj)
        self._drive_effector(state[77:79])
        self._entered[:] = state[79:83].reshape(2, 2) > 0.5
        self._first_block = int(state[83])

    # ------------------------------------------------------------------ render
    def render(self):
        """An RGB frame (rendered only when called, so the default render_mode costs nothing until then)."""
        if self.render_mode != "rgb_array":
            return None
        h, w = self.render_size
        # Looking from the far side of the table (x = 1.0) back at the robot, like the original's default camera.
        view = pybullet.computeViewMatrix([0.95, 0, 0.85], [0.4, 0, 0], [0, 0, 1])
        proj = pybullet.computeProjectionMatrixFOV(42, w / h, 0.05, 3.0)
        img = self._client.getCameraImage(w, h, view, proj, renderer=pybullet.ER_TINY_RENDERER, shadow=0)[2]
        return np.asarray(img, np.uint8).reshape(h, w, 4)[..., :3].copy()


# ---------------------------------------------------------------------- scoring from observations
def block_target_distances(obs: np.ndarray) -> np.ndarray:
    """(..., 16) observations -> (..., 2 blocks, 2 targets) xy distances."""
    obs = np.asarray(obs)
    blocks = np.stack([obs[..., 0:2], obs[..., 3:5]], axis=-2)
    targets = np.stack([obs[..., 10:12], obs[..., 13:15]], axis=-2)
    return np.linalg.norm(blocks[..., :, None, :] - targets[..., None, :, :], axis=-1)


def block_targets(obs: np.ndarray) -> tuple[int, int]:
    """The target (0 or 1) each block sits in (closest target, within 0.05 m), -1 where it sits in none."""
    dist = block_target_distances(obs)
    return tuple(int(d.argmin()) if d.min() < GOAL_TOLERANCE else -1 for d in dist)


def n_completed(obs: np.ndarray) -> int:
    """Blocks sitting in distinct targets (0, 1 or 2)."""
    t = [x for x in block_targets(obs) if x >= 0]
    return len(set(t)) if len(t) == 2 else len(t)


def episode_modes(obs: np.ndarray) -> dict:
    """The behaviour mode of one episode from ALL its (T, 16) observations, the final one included.

    first_block: which block (0 or 1) was first within tolerance of a target, -1 if neither ever was (both on the
    same step: 0). block0_target, block1_target: the target each block sits in at the end, -1 for none.
    The env reports the same keys in every step's info, so a rollout's final info carries its mode too.
    """
    obs = np.asarray(obs)
    if obs.ndim != 2 or obs.shape[1] != OBS_DIM:
        raise ValueError(f"episode_modes: expected (T, {OBS_DIM}) observations, got shape {obs.shape}")
    inside = block_target_distances(obs).min(axis=-1) < GOAL_TOLERANCE  # (T, 2)
    steps = np.flatnonzero(inside.any(axis=1))
    first_block = int(np.argmax(inside[steps[0]])) if len(steps) else -1
    t0, t1 = block_targets(obs[-1])
    return {"first_block": first_block, "block0_target": t0, "block1_target": t1}
