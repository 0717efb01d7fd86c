"""Scripted Franka Kitchen expert: damped-least-squares IK on the ``end_effector`` site, one skill per subtask.

Control (docs/notes/kitchen.md): each step the desired end-effector pose gives a 6-D twist, damped least squares (lambda 0.05)
turns it into joint velocities, joints at the MODEL's limits (joint 2 is +-1.7628, not the config's +-1.8) are
removed from the solve, a null-space term pulls toward the start posture, and gravity feed-forward
``qfrc_bias / (kp * dt)`` is added because the env's position actuators sag under gravity otherwise.

Skills read the privileged simulator state (an expert may): articulated objects are grasped (or pushed) at their
handle site and then driven along the path their handle takes as the joint moves, computed by forward kinematics
on a scratch copy of the model, so the gripper follows the door/knob instead of fighting it. The kettle is picked by
its handle from above-front and placed on the back-left burner. Between subtasks the arm returns to its start
posture in joint space. Measured success and lengths: docs/notes/kitchen.md (``python -m envs.experts.kitchen``).
"""

from __future__ import annotations

import functools

import numpy as np
from tqdm import tqdm

from envs.experts.collect import collect_demos, write_zarr
from envs.geometry import rot_z
from envs.kitchen import COMPLETION_THRESHOLD, TASKS, KitchenEnv, task_distance

N_ARM = 7
ACT_KP = np.array([870.0, 870, 870, 870, 120, 120, 120])  # actuator gains (kitchen model), for gravity feed-forward
R_FRONT = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])  # start orientation: approach +y, fingers along x, site-x up
_C = np.sqrt(0.5)
# approach pitched 45 deg down toward +y, fingers in the y-z plane: keeps the wrist under the knob panel at the goal
R_TILT = np.array([[-1.0, 0, 0], [0, _C, _C], [0, _C, -_C]])


def _rot_err(r_goal: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) rotating r onto r_goal, in world coordinates."""
    import mujoco

    q, qg, dq = np.zeros(4), np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(q, r.reshape(-1))
    mujoco.mju_mat2Quat(qg, r_goal.reshape(-1))
    mujoco.mju_negQuat(q, q)
    mujoco.mju_mulQuat(dq, qg, q)
    if dq[0] < 0:
        dq = -dq
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, dq, 1.0)
    return vel


class IKController:
    """Joint-velocity actions (9,) in the env's [-1, 1] convention that drive the end effector to a pose."""

    def __init__(self, env: KitchenEnv, damping: float = 0.05, lin_gain: float = 6.0, ang_gain: float = 5.0,
                 max_lin: float = 0.6, max_ang: float = 2.0, track_gain: float = 1.0):
        import mujoco

        self.env, self.mj = env, mujoco
        self.model = env.model
        self.scratch = mujoco.MjData(self.model)
        self.site = self.model.site("end_effector").id
        self.lo = self.model.jnt_range[:N_ARM, 0] + 0.03
        self.hi = self.model.jnt_range[:N_ARM, 1] - 0.03
        self.home = env.init_qpos[:N_ARM].copy()
        self.damping, self.lin_gain, self.ang_gain = damping, lin_gain, ang_gain
        self.max_lin, self.max_ang, self.track_gain = max_lin, max_ang, track_gain

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.env.data
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def action(self, pos: np.ndarray | None, rot: np.ndarray | None, grip: float, speed: float = 1.0) -> np.ndarray:
        """Action toward the pose (pos, rot); ``pos=None`` moves the arm in joint space to its start posture."""
        mj, m, s = self.mj, self.model, self.scratch
        s.qpos[:] = self.env.data.qpos
        s.qvel[:] = 0
        mj.mj_forward(m, s)  # Jacobian and gravity at the current (true) state
        if pos is None:
            return self._to_action(np.clip(3.0 * (self.home - s.qpos[:N_ARM]), -1.5, 1.5), grip)
        p, r = s.site_xpos[self.site], s.site_xmat[self.site].reshape(3, 3)
        v_lin = self.lin_gain * (pos - p)
        v_ang = self.ang_gain * _rot_err(rot, r)
        v_lin *= min(1.0, speed * self.max_lin / (np.linalg.norm(v_lin) + 1e-9))
        v_ang *= min(1.0, self.max_ang / (np.linalg.norm(v_ang) + 1e-9))
        jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mj.mj_jacSite(m, s, jp, jr, self.site)
        jac = np.vstack([jp, jr])[:, :N_ARM]
        twist = np.concatenate([v_lin, v_ang])
        q = s.qpos[:N_ARM]
        free = np.ones(N_ARM, dtype=bool)
        for _ in range(3):  # active set: drop joints that would be pushed past the model's limits
            j = jac[:, free]
            dq = np.zeros(N_ARM)
            inv = j.T @ np.linalg.inv(j @ j.T + self.damping**2 * np.eye(6))
            dq[free] = inv @ twist
            null = 0.5 * (self.home - q)[free]
            dq[free] += null - inv @ (j @ null)
            blocked = ((q <= self.lo) & (dq < 0)) | ((q >= self.hi) & (dq > 0))
            if not (blocked & free).any():
                break
            free &= ~blocked
        # the position actuators cover only part of a step's commanded displacement within the step (the target is
        # re-anchored at the observed pose every step), so the IK velocity is scaled up to make the arm keep pace
        return self._to_action(self.track_gain * dq, grip)

    def _to_action(self, dq: np.ndarray, grip: float) -> np.ndarray:
        vel = dq + self.scratch.qfrc_bias[:N_ARM] / (ACT_KP * self.env.dt)
        act = np.empty(9)
        act[:N_ARM] = np.clip(vel / 2.0, -1.0, 1.0)  # the env maps [-1, 1] to +-2 rad/s
        act[7:] = grip  # +1 opens (0.04 m), -1 closes: the finger target moves 0.16 m per step, i.e. all the way
        return act


# Articulated subtasks: the joint the expert drives (full-qpos index), the handle site and the body carrying it, where
# to drive the joint (past the goal, inside the joint range, so the 0.3 threshold is crossed with margin), how the hand
# meets the handle ("grasp": fingers close on it; "push": closed fingers push it) with the grasp yaw about z applied to
# R_FRONT, a contact offset from the site (world frame, at the closed state), how far ahead of the measured joint
# the hand is sent ("lead": more lead = more force against the joint's friction and damping) and whether the hand
# turns with the handle ("turn"; holding the start orientation pulled the doors open faster and with less slip).
ARTICULATED = {
    "microwave": dict(qadr=22, site="microhandle_site", body="microdoorroot", drive_to=-0.95, mode="grasp", yaw=0.3,
                      lead=0.3, turn=False),
    "hinge cabinet": dict(qadr=21, site="hinge_site2", body="hingerightdoor", drive_to=1.5, mode="grasp", yaw=0.0,
                          lead=0.3, turn=False),
    "slide cabinet": dict(qadr=19, site="slide_site", body="slidelink", drive_to=0.42, mode="grasp", yaw=0.0,
                          lead=0.05),
    "light switch": dict(qadr=17, site="light_site", body="lightswitchroot", drive_to=-0.7, mode="push", yaw=0.0,
                         offset=(0.02, 0.03, -0.015), lead=0.7, speed=0.4),
    "bottom burner": dict(qadr=11, site="knob2_site", body="knob 2", drive_to=-1.2, mode="grasp", yaw=0.0),
    "top burner": dict(qadr=15, site="knob4_site", body="knob 4", drive_to=-1.2, mode="grasp", yaw=0.0),
}
KETTLE_GOAL_XY = np.array([-0.23, 0.75])  # the top-left burner, where D4RL's kettle goal sits
OPEN, CLOSED = 1.0, -1.0


class Kinematics:
    """Where a handle would be if its joint were at angle theta: forward kinematics on a scratch copy."""

    def __init__(self, env: KitchenEnv):
        import mujoco

        self.env, self.mj = env, mujoco
        self.scratch = mujoco.MjData(env.model)

    def handle(self, qadr: int, theta: float, site: str, body: str) -> tuple[np.ndarray, np.ndarray]:
        s, m = self.scratch, self.env.model
        s.qpos[:] = self.env.data.qpos
        s.qpos[qadr] = theta
        self.mj.mj_kinematics(m, s)
        return s.site(site).xpos.copy(), s.body(body).xmat.reshape(3, 3).copy()


def _reach(ik: IKController, pos, rot, grip, tol=0.015, max_steps=40, speed=1.0):
    """Yield targets until the end effector is within tol (m, and ~0.1 rad) of the pose, or max_steps pass."""
    for _ in range(max_steps):
        p, r = ik.ee_pose()
        if np.linalg.norm(p - pos) < tol and np.linalg.norm(_rot_err(rot, r)) < 0.25:
            return
        yield pos, rot, grip, speed


# Between subtasks the arm first returns to its start posture (joint space): every subtask succeeds from there
# alone, while going straight from one handle to the next swept the kettle, met the opened hinge door, or reached
# the microwave in an arm configuration that could not get down to its handle (even via the start hand pose).
def _via(ik: IKController, pos, rot, grip):
    for _ in range(30):
        if np.abs(ik.env.data.qpos[:N_ARM] - ik.home).max() < 0.08:
            return
        yield None, None, grip, 1.0


def _hold(pos, rot, grip, n):
    for _ in range(n):
        yield pos, rot, grip, 1.0


def articulate(ik: IKController, kin: Kinematics, task: str, rng: np.random.Generator, jitter: float = 0.0):
    """Grasp (or push) a handle and carry it along its own path until the joint reaches ``drive_to``."""
    spec = ARTICULATED[task]
    qadr, site, body, goal = spec["qadr"], spec["site"], spec["body"], spec["drive_to"]
    data = ik.env.data
    theta0 = float(data.qpos[qadr])
    site0, rb0 = kin.handle(qadr, theta0, site, body)
    r_grasp = rot_z(spec["yaw"]) @ R_FRONT
    offset = np.asarray(spec.get("offset", (0.0, 0.0, 0.0))) + rng.uniform(-jitter, jitter, 3)
    grip = CLOSED if spec["mode"] == "push" else OPEN
    approach = r_grasp[:, 2]

    def pose(theta):
        s, rb = kin.handle(qadr, theta, site, body)
        rel = rb @ rb0.T
        return s + rel @ offset, (rel @ r_grasp if spec.get("turn", True) else r_grasp)

    p0, r0 = pose(theta0)
    yield from _via(ik, p0 - 0.12 * approach, r0, grip)
    yield from _reach(ik, p0 - 0.12 * approach, r0, grip, tol=0.03)
    yield from _reach(ik, p0, r0, grip, tol=0.015, max_steps=20)
    if spec["mode"] == "grasp":
        yield from _hold(p0, r0, CLOSED, 3)
    step = spec.get("lead", 0.15)  # how far ahead of the measured joint the hand is sent (joint units)
    for _ in range(45):
        theta = float(data.qpos[qadr])
        if abs(theta - goal) < 0.05 or task_distance(data.qpos, task) < 0.1:
            break
        p, r = pose(theta + np.clip(goal - theta, -step, step))
        yield p, r, CLOSED, spec.get("speed", 1.0)
    p, r = ik.ee_pose()
    yield from _hold(p, r, OPEN if spec["mode"] == "grasp" else CLOSED, 2)
    yield from _reach(ik, p - 0.12 * r[:, 2], r, OPEN, tol=0.03, max_steps=12)


def move_kettle(ik: IKController, kin: Kinematics, rng: np.random.Generator, jitter: float = 0.0):
    """Grip the kettle's handle from above and in front, lift it over the burner plates, set it on the top-left burner.

    A straight top-down grasp put the wrist into the bottom-burner knob (which sits above the goal) while carrying;
    a horizontal one pushed the kettle away before the fingers got around the handle."""
    data = ik.env.data
    handle = data.site("kettle_site").xpos.copy() + rng.uniform(-jitter, jitter, 3) * np.array([1, 0, 0])
    base = data.body("kettle").xpos.copy()
    grasp = handle.copy()
    back = 0.12 * R_TILT[:, 2]
    yield from _via(ik, grasp - back, R_TILT, OPEN)
    yield from _reach(ik, grasp - back, R_TILT, OPEN, tol=0.03)
    yield from _reach(ik, grasp - back, R_TILT, OPEN, tol=0.01, max_steps=10)  # settle before going in
    yield from _reach(ik, grasp, R_TILT, OPEN, tol=0.01, max_steps=25, speed=0.35)
    yield from _hold(grasp, R_TILT, CLOSED, 4)
    lift = grasp + [0, 0, 0.06]
    yield from _reach(ik, lift, R_TILT, CLOSED, tol=0.03, speed=0.6)
    place = grasp.copy()
    place[:2] += KETTLE_GOAL_XY + rng.uniform(-jitter, jitter, 2) - base[:2]
    yield from _reach(ik, place + [0, 0, 0.06], R_TILT, CLOSED, tol=0.03, speed=0.6)
    yield from _reach(ik, place + [0, 0, 0.01], R_TILT, CLOSED, tol=0.015, speed=0.5)
    yield from _hold(place + [0, 0, 0.01], R_TILT, OPEN, 3)
    yield from _reach(ik, place + [0, 0, 0.01] - back, R_TILT, OPEN, tol=0.03, max_steps=12)


def skill(task: str, ik: IKController, kin: Kinematics, rng: np.random.Generator, jitter: float = 0.0,
          attempts: int = 2):
    """The subtask's skill, started again from where things stand if the joint did not reach the goal (a push
    that slid off the light switch, a handle that slipped out of the fingers)."""
    if task != "kettle" and task not in ARTICULATED:
        raise KeyError(f"kitchen expert: unknown subtask {task!r}; known: {list(TASKS)}")
    for _ in range(attempts):
        if task == "kettle":
            yield from move_kettle(ik, kin, rng, jitter)
        else:
            yield from articulate(ik, kin, task, rng, jitter)
        if task_distance(ik.env.data.qpos, task) < COMPLETION_THRESHOLD - 0.05:
            return


def run_episode(env: KitchenEnv, tasks: list[str], seed: int, action_noise: float = 0.0, jitter: float = 0.0,
                max_steps: int | None = None, frames: list | None = None) -> dict:
    """Do ``tasks`` in order from ``env.reset(seed)``; returns the recorded episode and what got done.

    Noise (for demo variety) comes from ``default_rng(seed)``: contact-point jitter (m) and per-step Gaussian noise
    on the arm's actions. ``frames`` (a list) collects rendered frames when given.
    """
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    ik, kin = IKController(env), Kinematics(env)
    max_steps = max_steps or env.max_steps
    queue = list(tasks)
    current = skill(queue.pop(0), ik, kin, rng, jitter)
    rec = {"obs": [], "action": [], "action_abs": [], "state": []}
    target = None
    for _ in range(max_steps):
        while target is None:
            try:
                target = next(current)
            except StopIteration:
                if not queue:
                    break
                current = skill(queue.pop(0), ik, kin, rng, jitter)
        if target is None:  # every skill has finished
            break
        act = ik.action(*target)
        act[:N_ARM] = np.clip(act[:N_ARM] + action_noise * rng.standard_normal(N_ARM), -1, 1)
        act = act.astype(np.float32)
        rec["obs"].append(obs["obs"])
        rec["state"].append(env.get_state())
        rec["action"].append(act)
        rec["action_abs"].append(env.joint_targets(act).astype(np.float32))
        obs, _, _, _, info = env.step(act)
        if frames is not None:
            frames.append(env.render())
        target = None
    out = {k: np.stack(v) for k, v in rec.items()}
    out["completed"] = list(info["completed_tasks"])
    out["success"] = set(tasks) <= set(info["completed_tasks"])
    return out


def sample_tasks(rng: np.random.Generator, k: int = 4) -> list[str]:
    """k distinct subtasks in a random order (the public demos are 4-subtask sequences of varied subsets/orders)."""
    return [TASKS[i] for i in rng.permutation(len(TASKS))[:k]]


_WORKER_ENV: dict = {}


def _demo_attempt(ep_seed: int, n_tasks: int, run_kwargs: dict, env_kwargs: dict) -> dict:
    """One demo attempt from its seed alone (module level, so worker processes can unpickle it)."""
    key = repr(sorted(env_kwargs.items()))
    if key not in _WORKER_ENV:  # one env per process, reused across attempts
        _WORKER_ENV[key] = KitchenEnv(render_mode=None, **env_kwargs)
    tasks = sample_tasks(np.random.default_rng([ep_seed, 1]), n_tasks)
    ep = run_episode(_WORKER_ENV[key], tasks, ep_seed, **run_kwargs)
    return ep | {"tasks": tasks, "length": len(ep["action"])}


def generate(out_path, n: int, seed: int = 0, n_tasks: int = 4, max_steps: int = 600, action_noise: float = 0.05,
             jitter: float = 0.005, max_attempts: int | None = None, workers: int = 1, **env_kwargs) -> dict:
    """Write ``n`` successful expert demos (all ``n_tasks`` subtasks done) in Diffusion Policy's kitchen zarr layout.

    data/obs (T, 60) D4RL layout, data/action (T, 9) env velocity actions, data/action_abs (T, 9) the joint-position
    targets those actions sent (DP's kitchen_lowdim_abs), data/state (T, 59) qpos+qvel for exact resets.
    Attempts run seeds ``seed, seed + 1, ...`` (the test seeds skipped); failed attempts are dropped and counted in
    the stats. ``workers`` > 1 runs attempts in that many processes; the dataset does not depend on it.
    """
    attempt = functools.partial(_demo_attempt, n_tasks=n_tasks, run_kwargs={"action_noise": action_noise,
                                "jitter": jitter}, env_kwargs={"max_steps": max_steps, **env_kwargs})
    per_task = {t: [0, 0] for t in TASKS}  # subtask -> [done, attempted], over every attempt

    def count_subtasks(ep: dict) -> None:
        for t in ep["tasks"]:
            per_task[t][0] += t in ep["completed"]
            per_task[t][1] += 1

    episodes, stats = collect_demos(attempt, n, seed, task="kitchen", max_attempts=max_attempts, workers=workers,
                                    on_attempt=count_subtasks)
    write_zarr(out_path, episodes, ["obs", "action", "action_abs", "state"])
    return stats | {
        "per_task_completion": {t: (d / a if a else None) for t, (d, a) in per_task.items()},
        "max_length": int(max(e["length"] for e in episodes)),
        "n_distinct_orders": len({tuple(e["tasks"]) for e in episodes}),
    }


def evaluate_expert(n_single: int = 20, n_sequences: int = 20, seed: int = 1000, action_noise: float = 0.05,
                    jitter: float = 0.005, max_steps: int = 600) -> dict:
    """Success of each subtask alone (``n_single`` seeds each) and of random 4-subtask sequences, with demo noise."""
    env = KitchenEnv(max_steps=max_steps, render_mode=None)
    out: dict = {"single": {}, "sequences": {}}
    for task in tqdm(TASKS, desc="subtasks alone"):
        eps = [run_episode(env, [task], seed + i, action_noise, jitter) for i in range(n_single)]
        out["single"][task] = {"success": float(np.mean([e["success"] for e in eps])),
                               "mean_length": float(np.mean([len(e["action"]) for e in eps]))}
    eps = []
    for i in tqdm(range(n_sequences), desc="4-subtask sequences"):
        tasks = sample_tasks(np.random.default_rng([seed + i, 1]))
        eps.append(run_episode(env, tasks, seed + i, action_noise, jitter))
    lengths = np.array([len(e["action"]) for e in eps])
    ok = np.array([e["success"] for e in eps])
    out["sequences"] = {"all_four": float(ok.mean()), "mean_length": float(lengths.mean()),
                        "mean_length_success": float(lengths[ok].mean()) if ok.any() else None,
                        "within_280": float((ok & (lengths <= 280)).mean()),
                        "n_completed_mean": float(np.mean([len(e["completed"]) for e in eps]))}
    return out


if __name__ == "__main__":
    import json
    import sys

    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(evaluate_expert(*args), indent=1))
