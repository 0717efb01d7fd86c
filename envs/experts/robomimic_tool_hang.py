"""Scripted expert for ToolHang: (1) insert the L-shaped frame's rod into the stand, (2) hang the wrench's ring on
the frame's hook arm. Yields (7-D delta action, perturbable) like the Lift/Can experts.

Stage 1 servos on the MEASURED frame pose: the gripper orientation that would put the frame at its target
orientation is computed from the current frame-in-gripper transform every step (the grasp slips; this absorbs it),
and the gripper position is corrected by the error of the rod tip. The hook arm's yaw is snapped to a world axis so
the square rod enters the square cavity face-on (on its diagonal it jams).

Stage 2 ("drop over the nub"): grasp the tool's grip block top-down, lift it and turn it flat so that its handle
points out of the hook's free end (toward the robot), carry the ring horizontally over the 1.2 cm nub at the free end
and lower it around the nub (the octagonal hole, inradius 9.7 mm, around the 7.5 mm nub: ~4 mm clearance on every
side, where threading the ring on sideways leaves 1-2 mm), tip it ~10 deg about the ring's inner edge (outer side
down) and open the gripper: the tool's weight, ~9 cm outward of the end, swings the ring's outer arc down past the end
face and under the hook arm, and the tool hangs. If it sticks on the nub, the closed fingertips push the grip block
down until it tips over. The ring is servoed with the measured tool pose every step (PI on the ring centre).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from drifting_policy.utils.rotation import axis_angle_to_matrix
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


def grasp_and_lift(env, point, dz: float, rot: np.ndarray, speed: float, lift) -> Iterator[tuple[np.ndarray, bool]]:
    """Top-down grasp of a (moving) point: hover 8 cm above it, descend to ``dz`` above it, close, then rise by
    ``lift()`` m; returns the raised grip position. ``lift`` is called after closing, not before the approach: the
    perturbations draw from the same random stream during the approach, so the order of draws shapes the demo."""
    rs = env.rs_env
    yield from goto(env, lambda: point() + [0, 0, 0.08], rot, -1.0, speed, 0.015, 0.1, 80)
    yield from goto(env, lambda: point() + [0, 0, dz], rot, -1.0, 0.5, 0.006, 0.08, 50, False)
    yield from hold(env, grip_site_pose(rs)[0], rot, 1.0, 8)
    up = grip_site_pose(rs)[0] + [0, 0, lift()]
    yield from goto(env, lambda: up, rot, 1.0, speed, 0.03, 0.2, 40)
    return up


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
    yield from grasp_and_lift(env, grip, 0.002, rot, speed, lambda: 0.2)
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


def servo_ring(env, ring_target: np.ndarray, rot_target: np.ndarray, speed: float,
               bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One action toward the gripper pose that puts the held tool at ``rot_target`` with its ring centre at
    ``ring_target``, through the grasp as measured now (slip is absorbed). ``bias`` (added to the gripper target) is
    the integral term that removes the droop under the tool's weight. Returns (action, ring error, rotation error)."""
    rs = env.rs_env
    pg, rg = grip_site_pose(rs)
    po, ro = body_pose(rs, rs.obj_body_id["tool"])
    ring = site(rs, "tool_hole1_center")
    r_go, p_go = rg.T @ ro, rg.T @ (po - pg)
    rg_target = rot_target @ r_go.T
    pg_target = ring_target - rot_target @ (ro.T @ (ring - po)) - rg_target @ p_go
    action, _, err_rot = servo(env, pg_target + bias, rg_target, 1.0, speed)
    return action, ring_target - ring, err_rot


def track(env, path, n: int, speed: float, limit: int, tol_track: float = 0.003, tol_end: float = 0.0015,
          tol_rot: float = 0.05, gate_rot: float = 0.15) -> Iterator[tuple[np.ndarray, bool]]:
    """Carry the ring along path(s), s in [0, 1], in n increments: the next one only while the ring is within
    tol_track of the current target; ends within tol_end of the last (or after ``limit`` steps). The integral gain
    is small (0.1 per step): 0.3 made the heavy tool oscillate by +-3 mm."""
    k, bias = 0, np.zeros(3)
    for _ in range(limit):
        target, rot = path(min(k / max(n, 1), 1.0))
        action, err, err_rot = servo_ring(env, target, rot, speed, bias)
        e = float(np.linalg.norm(err))
        if e < 0.015:
            bias = np.clip(bias + 0.1 * err, -0.02, 0.02)
        if k >= n and e < tol_end and err_rot < tol_rot:
            return True
        if k < n and e < tol_track and err_rot < gate_rot:
            k += 1
        yield action, False
    return False


def hang_tool(env, rng, speed: float) -> Iterator[tuple[np.ndarray, bool]]:
    rs = env.rs_env
    tid = rs.obj_body_id["tool"]
    q7 = lambda: float(rs.sim.data.qpos[rs.robots[0]._ref_joint_pos_indexes][6])  # noqa: E731
    # hook geometry, measured: h points (horizontally) from the free end inward along the hook arm
    hang, inter = site(rs, "frame_hang_site"), site(rs, "frame_intersection_site")
    z = np.array([0.0, 0.0, 1.0])
    h = inter - hang
    h = (h - (h @ z) * z) / np.linalg.norm(h - (h @ z) * z)
    side = np.cross(h, z)
    # tool held flat with its handle (tool local x, from the ring to the grip) pointing out of the free end
    target_rt = np.stack([-h, np.cross(z, -h), z], axis=1)
    # top-down grasp of the grip block, fingers across the handle, at the yaw that becomes the home yaw (0) once the
    # tool is turned to target_rt; the turn (either way round) is chosen after lifting by joint 7's room
    _, rt = body_pose(rs, tid)
    turn = wrap(np.arctan2(-h[1], -h[0]) - np.arctan2(rt[1, 0], rt[0, 0]))
    yaw = -turn
    rot = top_down(yaw)
    tool = lambda: body_pose(rs, tid)[0]  # noqa: E731
    high = grip_site_pose(rs)[0]
    yield from goto(env, lambda: high, rot, -1.0, speed, 0.03, 0.2, 40)  # turn top-down clear of the frame
    up = yield from grasp_and_lift(env, tool, 0.0, rot, speed, lambda: rng.uniform(0.1, 0.14))
    # joint 7 turns opposite to the gripper yaw: of the two ways round take the one that ends nearer its middle
    # (the shorter one drove it into its +2.9 rad limit for some grasps)
    turn = min((turn, turn - np.sign(turn) * 2 * np.pi), key=lambda c: abs(q7() - c))
    for y in np.linspace(yaw, yaw + turn, int(np.ceil(abs(turn) / np.radians(30))) + 1)[1:]:
        for _ in range(25):
            action, _, err_rot = servo(env, up, top_down(y), 1.0, speed, 0.4)
            if err_rot < 0.1:
                break
            yield action, False
    # up to hook height first (a straight line from the table swept the tool through the frame's rod), then over the
    # nub, then down around it: the hole's centre over the nub (a0 inward of the end face), its lower face ~1.5 mm
    # over the hook arm
    a0 = rng.uniform(0.0025, 0.0055)
    ring = site(rs, "tool_hole1_center")
    via = np.array([ring[0], ring[1], hang[2] + rng.uniform(0.06, 0.08)])
    above = hang + a0 * h + rng.uniform(0.04, 0.05) * z
    c0 = hang + a0 * h + 0.009 * z
    yield from track(env, lambda s: (via, target_rt), 0, 0.8, 60, tol_end=0.02)
    yield from track(env, lambda s: (above, target_rt), 0, 0.8, 120, tol_end=0.004)
    yield from track(env, lambda s: (above + s * (c0 - above), target_rt), 10, 0.3, 100)
    # tip the ring about its inner lower edge, outer side (the handle) down
    tilt = np.radians(rng.uniform(7.0, 13.0))
    pivot = c0 + 0.0097 * h - 0.0035 * z

    def tipped(s):
        r = axis_angle_to_matrix(side * s * tilt)
        return pivot + r @ (c0 - pivot), r @ target_rt

    yield from track(env, tipped, int(np.ceil(np.degrees(tilt) / 2)), 0.3, 60)
    # let go and move up; if the ring sits on the nub, push the grip block down with the closed fingertips
    here = grip_site_pose(rs)
    yield from hold(env, here[0], here[1], -1.0, 10)
    up = here[0] + [0, 0, 0.06]
    yield from goto(env, lambda: up, here[1], -1.0, 0.5, 0.01, 0.3, 30)
    for _ in range(15):
        if ring_on_hook(rs):
            break
        yield servo(env, up, here[1], -1.0)[0], False
    for _ in range(2):
        if ring_on_hook(rs):
            break
        grip = tool()
        over = grip + [0, 0, 0.05]
        yield from goto(env, lambda o=over: o, here[1], 1.0, 0.6, 0.01, 0.3, 25)
        yield from goto(env, lambda g=grip: g + [0, 0, rng.uniform(-0.035, -0.025)], here[1], 1.0, 0.3, 0.005, 0.3, 25)
        yield from goto(env, lambda o=over: o, here[1], 1.0, 0.6, 0.01, 0.3, 25)
    yield from goto(env, lambda: up, here[1], -1.0, 0.6, 0.01, 0.3, 30)


def tool_hang_expert(env, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    speed = rng.uniform(0.6, 1.0)
    # hook arm toward the robot: the frame-holding wrist ends in a pose from which the top-down tool grasp is
    # reachable (with the hook toward -y the gripper ends pointing at the robot and cannot turn down again)
    hook_dir = np.array([-1.0, 0.0, 0.0])
    yield from insert_frame(env, rng, hook_dir, speed)
    yield from hang_tool(env, rng, speed)
    while True:
        here = grip_site_pose(env.rs_env)
        yield servo(env, here[0], here[1], -1.0)[0], False
