"""PushT (Diffusion Policy's benchmark task) on top of gym-pusht 0.1.8.

gym-pusht supplies the pymunk scene, PD-controlled agent, coverage and pygame renderer; this subclass changes what
the benchmark needs to differ:
- observations in Diffusion Policy's layout: ``state`` = 9 block keypoints (DP's definition) x 2 + agent xy (20,),
  ``visual`` = 96x96 RGB image (uint8 HWC) + agent xy;
- ``reset_to_state`` sets the block angle BEFORE its position (gym-pusht keeps a legacy order that rotates the T
  about its centre of gravity after placing it, so a recorded state came back up to ~38 px off) and does not step
  the physics, so ``get_state()`` returns exactly what was restored;
- ``info["score"]`` = clip(coverage / 0.95, 0, 1) at this step, ``info["n_contacts"]`` counted per control step as DP
  does (gym-pusht divides by 1000 instead of 10), truncation at ``max_steps``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pygame
from gym_pusht.envs.pusht import PushTEnv as _GymPushTEnv
from gym_pusht.envs.pusht import pymunk_to_shapely
from gymnasium import spaces

from envs.geometry import planar_transform

WORKSPACE = 512.0
SUCCESS_COVERAGE = 0.95
SUBSTEPS = 10  # physics steps (dt 0.01) per 10 Hz control step

# Diffusion Policy's 9 block keypoints in the T's body frame (pixels). DP makes them once by farthest point sampling
# over the pixels of the T drawn alone at pose (256, 300, 0) on a 512x512 canvas, starting from
# default_rng(0).choice(n_pixels) and adding default_rng(0)-continued uniform(0, 1) jitter
# (diffusion_policy/env/pusht/pymunk_keypoint_manager.py). `derive_dp_block_keypoints()` recomputes them from
# gym-pusht's renderer (which draws exactly like DP's); the test checks the two agree.
DP_BLOCK_KEYPOINTS = np.array([
    [9.269786713763871, 90.04097352393619],
    [-60.983472364471474, -1.1867297607997276],
    [60.91275557727772, -1.3933642242328201],
    [-0.2705034390160016, 25.54362499146542],
    [-14.064927576212233, 122.81585355412153],
    [39.002738500170146, 32.857404276587566],
    [-39.966414424694534, 32.729655446429945],
    [-16.82434437939744, 62.86317892234989],
    [23.54146122024909, -1.7002881094626152],
])


def derive_dp_block_keypoints(n: int = 9, seed: int = 0) -> np.ndarray:
    """Recompute DP's block keypoints (n, 2) in the body frame by farthest point sampling over the drawn T."""
    import pygame
    import pymunk
    from gym_pusht.envs.pymunk_override import DrawOptions

    space = pymunk.Space()
    _GymPushTEnv.add_tee(space, (256, 300), 0)
    canvas = pygame.Surface((512, 512))
    canvas.fill(pygame.Color("white"))
    space.debug_draw(DrawOptions(canvas))
    img = pygame.surfarray.array3d(canvas).transpose(1, 0, 2)
    rows, cols = np.nonzero((img != 255).any(axis=-1))  # row-major pixel order, as DP enumerates them
    points = np.stack([cols - 256.0, rows - 300.0], axis=1)  # angle 0: body frame = image minus the position
    rng = np.random.default_rng(seed)
    chosen = [int(rng.choice(len(points)))]
    min_dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(np.argmax(min_dist)))
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen] + rng.uniform(0, 1, size=(n, 2))


def block_keypoints(block_pose) -> np.ndarray:
    """DP keypoints (9, 2) in pixels for a block pose (x, y, angle): rotate the body-frame points, then translate."""
    return planar_transform(DP_BLOCK_KEYPOINTS, block_pose)


def coverage_score(coverage: float) -> float:
    return float(np.clip(coverage / SUCCESS_COVERAGE, 0.0, 1.0))


class PushTEnv(_GymPushTEnv):
    """Push the T onto the fixed goal pose (256, 256, pi/4) with a disc driven to absolute xy targets."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, obs_type: str = "state", render_size: int = 96, max_steps: int = 300,
                 render_mode: str = "rgb_array", video_size: int = 256):
        if obs_type not in ("state", "visual"):
            raise ValueError(f"PushTEnv: obs_type must be 'state' or 'visual', got {obs_type!r}")
        if render_mode != "rgb_array":
            raise ValueError(f"PushTEnv: only render_mode='rgb_array' is supported, got {render_mode!r}")
        if max_steps < 1:
            raise ValueError(f"PushTEnv: max_steps must be >= 1, got {max_steps}")
        # the parent's own obs types are bypassed: get_obs below builds DP's layout
        super().__init__(obs_type="state", render_mode=render_mode, observation_width=render_size,
                         observation_height=render_size, visualization_width=video_size,
                         visualization_height=video_size)
        self.obs_type = obs_type
        self.max_steps = max_steps
        self._elapsed = 0
        pos = spaces.Box(0.0, WORKSPACE, shape=(2,), dtype=np.float32)
        if obs_type == "state":
            self.observation_space = spaces.Dict({"obs": spaces.Box(0.0, WORKSPACE, shape=(20,), dtype=np.float32)})
        else:
            image = spaces.Box(0, 255, shape=(render_size, render_size, 3), dtype=np.uint8)
            self.observation_space = spaces.Dict({"image": image, "agent_pos": pos})
        self.action_space = spaces.Box(0.0, WORKSPACE, shape=(2,), dtype=np.float32)

    # ---- state -------------------------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """[agent_x, agent_y, block_x, block_y, block_angle in [0, 2 pi)] (float64), DP's state layout."""
        return np.array([*self.agent.position, *self.block.position, self.block.angle % (2 * np.pi)])

    def _set_state(self, state) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (5,) or not np.all(np.isfinite(state)):
            raise ValueError("PushTEnv reset_to_state: expected 5 finite numbers [agent_x, agent_y, block_x, "
                             f"block_y, block_angle], got {state!r}")
        self.agent.position = (float(state[0]), float(state[1]))
        self.agent.velocity = (0.0, 0.0)
        # angle first: setting it rotates the body about its centre of gravity, which would move a placed origin
        self.block.angle = float(state[4])
        self.block.position = (float(state[2]), float(state[3]))
        self.block.velocity = (0.0, 0.0)
        self.block.angular_velocity = 0.0
        # refresh the shapes' cached world geometry (drawing, collisions) without stepping the physics
        for body in (self.agent, self.block):
            self.space.reindex_shapes_for_body(body)

    def block_pose(self) -> np.ndarray:
        return np.array([*self.block.position, self.block.angle])

    def keypoints(self) -> np.ndarray:
        """DP's 9 block keypoints (9, 2) in pixels."""
        return block_keypoints(self.block_pose())

    def coverage(self) -> float:
        return float(self._get_coverage())

    def _get_coverage(self) -> float:
        """gym-pusht's coverage with the T's two shapes in a fixed order: pymunk keeps a body's shapes in a set
        (ordered by memory address), and the polygon intersection's last bit depends on that order, so the same
        state gave different scores in different processes."""
        shapes = sorted(self.block.shapes, key=lambda shape: [tuple(v) for v in shape.get_vertices()])
        goal = pymunk_to_shapely(self.get_goal_pose_body(self.goal_pose), shapes)
        block = pymunk_to_shapely(self.block, shapes)
        return goal.intersection(block).area / goal.area

    # ---- gymnasium API -----------------------------------------------------------------------------------------
    def get_obs(self) -> dict[str, np.ndarray]:
        agent_pos = np.asarray(self.agent.position, dtype=np.float32)
        if self.obs_type == "state":
            return {"obs": np.concatenate([self.keypoints().reshape(-1), agent_pos]).astype(np.float32)}
        return {"image": np.ascontiguousarray(self._render(visualize=False)), "agent_pos": agent_pos}

    def _info(self, coverage: float) -> dict:
        return {
            "score": coverage_score(coverage),
            "is_success": bool(coverage > SUCCESS_COVERAGE),
            "coverage": float(coverage),
            "n_contacts": int(np.ceil(self.n_contact_points / SUBSTEPS)),
            "state": self.get_state(),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        self._elapsed = 0
        self._last_action = None
        return self.get_obs(), self._info(self.coverage())

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"PushTEnv.step: expected a finite (2,) agent target in pixels, got {action!r}")
        obs, reward, terminated, _, parent_info = super().step(action)
        self._elapsed += 1
        info = self._info(parent_info["coverage"])
        return obs, float(reward), bool(terminated), self._elapsed >= self.max_steps, info

    def _get_img(self, screen, width: int, height: int, render_action: bool = False) -> np.ndarray:
        # Same pixels as gym-pusht's version, 5x faster: tobytes gives row-major RGB directly, where gym-pusht copies
        # a strided pixels3d view and transposes it (rendering was the bulk of demo-generation time).
        canvas = np.frombuffer(pygame.image.tobytes(screen, "RGB"), np.uint8)
        img = cv2.resize(canvas.reshape(screen.get_height(), screen.get_width(), 3), (width, height))
        if render_action and self._last_action is not None:
            size = min(width, height)
            x, y = (np.asarray(self._last_action) / WORKSPACE * [width, height]).astype(np.int32)
            cv2.drawMarker(img, (int(x), int(y)), color=(255, 0, 0), markerType=cv2.MARKER_CROSS,
                           markerSize=int(8 / 96 * size), thickness=int(size / 96))
        return img

    def render(self) -> np.ndarray:
        """An RGB frame (video_size, video_size, 3) uint8 with the last action marked by a red cross."""
        return np.ascontiguousarray(self._render(visualize=True))
