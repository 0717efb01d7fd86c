"""Scripted expert for ToolHang: (1) insert the L-shaped frame's rod into the stand, (2) hang the wrench's ring on
the frame's hook arm. Yields (7-D delta action, perturbable) like the Lift/Can experts.

Stage 1 servos on the MEASURED frame pose: the gripper orientation that would put the frame at its target
orientation is computed from the current frame-in-gripper transform every step (the grasp slips; this absorbs it),
and the gripper position is corrected by the error of the rod tip. The hook arm's yaw is snapped to a world axis so
the square rod enters the square cavity face-on (on its diagonal it jams).

Stage 2: grasp the tool's grip block top-down, turn the ring plane vertical and across the hook arm, tilted ~50 deg
so its leading upper arc clears the 1.2 cm nub at the hook's free end while its lower arc is still outside the end,
then drop it under the arm, slide it on (PI servo on the measured ring centre, ~1 mm) and release; a miss backs off and
retries with new offsets. The margins are ~1-2 mm, so this stage succeeds in a minority of attempts (see
docs/notes/robomimic.md for the measured rate).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from envs.experts.robomimic_lift_can import body_pose, goto, hold
from envs.experts.robomimic_servo import gripper_yaw, servo, top_down, wrap
from envs.robomimic import grip_site_pose

# frame body coordinates (robosuite 1.5.2 HookFrame): rod along +z at x = 0.044, hook arm along -x at z = 0.086
FRAME_GRIP = np.array([0.044, 0.0, 0.052])


def site(rs, name: str) -> np.ndarray:
    return np.array(rs.sim.data.site_xpos[rs.obj_site_id[name]])


def cavity_center(rs) -> np.ndarray:
    d = rs.sim.data
    return np.mean([d.geom_xpos[rs.obj_geom_id[f"stand_wall_{i}"]] for i in range(4)], axis=0)


def frame_target_rotation(hook_dir: np.ndarray) -> np.ndarray:
    """Frame orientation with the rod pointing up (+z local -> +z world) and the hook arm (local -x) along hook_dir."""
    x = -np.asarray(hook_dir, dtype=float)
    z = np.array([0.0, 0.0, 1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def insert_frame(env, rng, hook_dir: np.ndarray, speed: float) -> Iterator[tuple[np.ndarray, bool]]:
    rs = env.rs_env
    fid = rs.obj_body_id["frame"]
    p, rf = body_pose(rs, fid)
    rod = rf[:, 2]
    normal = np.array([-rod[1], rod[0], 0.0])  # close the fingers across the rod
    yaw_raw = np.arctan2(normal[1], normal[0]) - np.pi / 2
    current = gripper_yaw(grip_site_pose(rs)[1])
    yaw = current + wrap(yaw_raw - current, np.pi)
    rot = top_down(yaw)
    grip = lambda: body_pose(rs, fid)[0] + body_pose(rs, fid)[1] @ FRAME_GRIP  # noqa: E731
    yield from goto(env, lambda: grip() + [0, 0, 0.08], rot, -1.0, speed, 0.015, 0.1, 80)
    yield from goto(env, lambda: grip() + [0, 0, 0.002], rot, -1.0, 0.5, 0.006, 0.08, 50, False)
    yield from hold(env, grip_site_pose(rs)[0], rot, 1.0, 8)
    up = grip_site_pose(rs)[0] + [0, 0, 0.2]
    yield from goto(env, lambda: up, rot, 1.0, speed, 0.03, 0.2, 40)
    target_rf = frame_target_rotation(hook_dir)
    cav = cavity_center(rs)
    top_z = cav[2] + 0.075  # top of the walls
    for phase, depth, tol, limit in (("align", 0.04, 0.006, 150), ("insert", -0.115, 0.004, 200)):
        for _ in range(limit):
            pg, rg = grip_site_pose(rs)
            _, rf = body_pose(rs, fid)
            g = rg.T @ rf  # frame in gripper coordinates
            rot_target = target_rf @ g.T
            tip = site(rs, "frame_tip_site")
            tip_target = np.array([cav[0], cav[1], top_z + depth])
            err_xy = np.linalg.norm((tip_target - tip)[:2])
            if phase == "insert" and err_xy > 0.004:
                tip_target[2] = max(tip[2], tip_target[2])  # hold height until centred again
            elif phase == "insert":
                tip_target[2] = max(tip[2] - 0.01, tip_target[2])  # descend in small steps
            action, _, err_rot = servo(env, pg + (tip_target - tip), rot_target, 1.0, 0.6)
            if np.linalg.norm(tip_target - tip) < tol and err_rot < 0.05:
                break
            yield action, False
    here = grip_site_pose(rs)
    yield from hold(env, here[0], here[1], -1.0, 6)
    # back off along the approach axis, then up, before turning: the open fingers still straddle the frame
    back = here[0] - here[1][:, 2] * 0.1
    yield from goto(env, lambda: back, here[1], -1.0, 0.5, 0.02, 0.3, 30)
    yield from goto(env, lambda: back + [0, 0, 0.12], here[1], -1.0, speed, 0.03, 0.3, 30)


def ring_on_hook(rs) -> bool:
    """The geometric part of robosuite's tool-on-frame test (ring centre on the hook line, inserted past the free
    end); the env's own test also requires the gripper NOT to touch the tool, so it is False while we hold it."""
    hang, inter = site(rs, "frame_hang_site"), site(rs, "frame_intersection_site")
    axis = inter - hang
    rel = site(rs, "tool_hole1_center") - hang
    t = rel @ axis / (axis @ axis)
    return bool(np.linalg.norm(rel - t * axis) < 0.0065 and 0.05 < t < 1.0)


def servo_object(env, body: str, point: str, point_target: np.ndarray, rot_target: np.ndarray, gripper: float,
                 speed: float, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Servo a grasped object: a site on it to ``point_target``, its body to ``rot_target`` (measured each step).
    ``bias`` is added to the gripper target (the integral term that removes the droop under the object's weight)."""
    rs = env.rs_env
    pg, rg = grip_site_pose(rs)
    _, ro = body_pose(rs, rs.obj_body_id[body])
    err = point_target - site(rs, point)
    goal = pg + err + (0.0 if bias is None else bias)
    action, _, err_rot = servo(env, goal, rot_target @ (rg.T @ ro).T, gripper, speed)
    return action, err, err_rot


def move_object(env, body, point, target, rot_target, speed, tol, limit, tol_rot=0.05):
    """PI servo of a held object's site; the integral only acts near the target (millimetre threading)."""
    bias = np.zeros(3)
    for _ in range(limit):
        action, err, err_rot = servo_object(env, body, point, target(), rot_target, 1.0, speed, bias)
        if np.linalg.norm(err) < tol and err_rot < tol_rot:
            return True
        if np.linalg.norm(err) < 0.02:
            bias = np.clip(bias + 0.3 * err, -0.02, 0.02)
        yield action, False
    return False


def hang_tool(env, rng, speed: float, tilt: float = 0.87) -> Iterator[tuple[np.ndarray, bool]]:
    rs = env.rs_env
    tid = rs.obj_body_id["tool"]
    # top-down grasp of the tool's grip block, fingers across the handle (tool local x)
    _, rt = body_pose(rs, tid)
    handle = rt[:, 0]
    yaw_raw = np.arctan2(handle[1], handle[0])  # fingers along yaw + 90 deg: across the handle
    # of the two grasp yaws take the one turned half a turn from the home yaw: with the other, tilting the ring
    # later drives the wrist (joint 7) into its limit at -2.9 rad
    yaw = wrap(yaw_raw, np.pi) + np.pi
    rot = top_down(yaw)
    tool = lambda: body_pose(rs, tid)[0]  # noqa: E731
    high = grip_site_pose(rs)[0]
    yield from goto(env, lambda: high, rot, -1.0, speed, 0.03, 0.2, 40)  # turn top-down clear of the frame
    yield from goto(env, lambda: tool() + [0, 0, 0.08], rot, -1.0, speed, 0.015, 0.1, 80)
    yield from goto(env, lambda: tool() + [0, 0, 0.0], rot, -1.0, 0.5, 0.006, 0.08, 50, False)
    yield from hold(env, grip_site_pose(rs)[0], rot, 1.0, 8)
    up = grip_site_pose(rs)[0] + [0, 0, 0.2]
    yield from goto(env, lambda: up, rot, 1.0, speed, 0.03, 0.2, 40)
    # hook geometry, measured: h points from the free end inward along the hook arm
    hang, inter = site(rs, "frame_hang_site"), site(rs, "frame_intersection_site")
    h = (inter - hang) / np.linalg.norm(inter - hang)
    z = np.array([0.0, 0.0, 1.0])
    side = np.cross(h, z)
    u = np.sin(tilt) * h + np.cos(tilt) * z  # ring plane: spanned by the handle (side) and u, leaning inward
    # the handle may point either way along `side`: take the one the held tool is closer to (less wrist travel)
    _, rt = body_pose(rs, tid)
    handle_dir = side if rt[:, 0] @ side >= 0 else -side
    target_rt = np.stack([handle_dir, u, np.cross(handle_dir, u)], axis=1)  # tool local (x, y, z)
    ring = "tool_hole1_center"
    r = 0.0097 * 0.9  # inner radius of the ring's octagon, less a little for the servo error
    boff, ahead = 0.006, 0.006  # clearance over the nub, how far past the free end the ring goes before dropping
    for _ in range(4):  # threading attempts: a miss backs off to the approach point and retries with new offsets
        waypoints = [  # ring-centre targets in hook coordinates (along h, up): over the nub, then under the bar
            (-0.05, 0.03, 0.6, 0.01),
            (-0.012, 0.016 - r * np.cos(tilt) + boff, 0.25, 0.0015),
            (ahead, 0.016 - r * np.cos(tilt) + boff, 0.2, 0.0015),
            (0.006, -0.001, 0.15, 0.002),
            (0.02, -0.002, 0.15, 0.002),
        ]
        for a, b, spd, tol in waypoints:
            target = hang + a * h + b * z
            yield from move_object(env, "tool", ring, lambda t=target: t, target_rt, spd, tol, 100)
        if ring_on_hook(rs):
            break
        back = hang - 0.05 * h + 0.03 * z
        yield from move_object(env, "tool", ring, lambda t=back: t, target_rt, 0.3, 0.01, 40)
        boff, ahead = rng.uniform(0.004, 0.009), rng.uniform(0.003, 0.008)
    here = grip_site_pose(rs)
    yield from hold(env, here[0], here[1], -1.0, 8)
    yield from goto(env, lambda: here[0] - here[1][:, 2] * 0.1, here[1], -1.0, 0.5, 0.02, 0.3, 40)


def tool_hang_expert(env, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    speed = rng.uniform(0.6, 1.0)
    # hook arm toward the robot: the frame-holding wrist ends in a pose from which the top-down tool grasp is
    # reachable (with the hook toward -y the gripper ends pointing at the robot and cannot turn down again)
    hook_dir = np.array([-1.0, 0.0, 0.0])
    yield from insert_frame(env, rng, hook_dir, speed)
    yield from hang_tool(env, rng, speed, tilt=rng.uniform(0.82, 0.92))
    while True:
        here = grip_site_pose(env.rs_env)
        yield servo(env, here[0], here[1], -1.0)[0], False
