"""TwoPaths: a point agent must reach a goal past a central obstacle, going round it on the left or the right.

The smallest control task where averaging modes fails: demonstrations go left or right at random, so a policy that
regresses to their mean drives straight into the obstacle. Plain numpy, no simulator.

    start ~ (0, -0.75)  ->  round the disk of radius 0.4 at the origin  ->  goal ~ (0, 1)

- observation ``{"obs": float32 (4,)}`` = agent xy, goal xy (this is the whole state);
- action: an absolute 2-D target; the agent moves toward it by at most ``max_step`` per step (Diffusion Policy's
  PushT convention of absolute position targets);
- touching the obstacle ends the episode as a failure; reaching the goal (within ``goal_radius``) untouched ends it
  as a success (``info["score"] = 1``);
- ``info["side"]`` is "left" / "right" once the agent has passed the obstacle's height (y >= 0), None before,
  for the rollout's left/right split.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.rendering import check_render_mode

OBSTACLE_CENTRE = np.zeros(2)
OBSTACLE_RADIUS = 0.4
BOUND = 1.2  # the workspace is [-BOUND, BOUND]^2
# The start sits close below the obstacle, so a policy must commit to a side within a few steps: averaging the two
# demonstrated sides drives straight up and hits it before small asymmetries can grow.
START, GOAL = np.array([0.0, -0.75]), np.array([0.0, 1.0])


def segment_hits_disk(p: np.ndarray, q: np.ndarray, centre: np.ndarray, radius: float) -> float | None:
    """First fraction t in [0, 1] at which the segment p -> q enters the closed disk, or None if it never does."""
    d, f = q - p, p - centre
    if f @ f <= radius**2:
        return 0.0
    a, b, c = d @ d, 2 * f @ d, f @ f - radius**2
    disc = b * b - 4 * a * c
    if a == 0 or disc < 0:
        return None
    t = (-b - np.sqrt(disc)) / (2 * a)
    return float(t) if 0.0 <= t <= 1.0 else None


def mode_statistics(results: list[dict]) -> dict:
    """Side split over episodes (each a rollout's final info with "side"): the fraction passing left / right, the
    fraction that never got past the obstacle ("none"), and the left share among those that did."""
    if not results:
        raise ValueError("mode_statistics: no episodes")
    sides = [r.get("side") for r in results]
    left, right = sides.count("left"), sides.count("right")
    return {"left": left / len(sides), "right": right / len(sides), "none": 1 - (left + right) / len(sides),
            "left_share": left / (left + right) if left + right else float("nan")}


class TwoPathsEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    # the env contract's hook for evaluation (envs/README.md): the module-level function
    mode_statistics = staticmethod(mode_statistics)

    def __init__(
        self,
        max_steps: int = 100,
        max_step: float = 0.05,
        goal_radius: float = 0.08,
        init_noise: float = 0.05,
        render_size: int = 96,
        render_mode: str | None = "rgb_array",
    ):
        check_render_mode("TwoPathsEnv", render_mode)
        self.max_steps, self.max_step, self.goal_radius = max_steps, max_step, goal_radius
        self.init_noise, self.render_size, self.render_mode = init_noise, render_size, render_mode
        self.observation_space = spaces.Dict(
            {"obs": spaces.Box(-BOUND, BOUND, shape=(4,), dtype=np.float32)}
        )
        self.action_space = spaces.Box(-BOUND, BOUND, shape=(2,), dtype=np.float32)
        self.agent, self.goal = START.copy(), GOAL.copy()
        self._reset_flags()

    def _reset_flags(self) -> None:
        self.touched, self.succeeded, self.side, self.n_steps = False, False, None, 0
        self._update_side()

    def _update_side(self) -> None:
        if self.side is None and self.agent[1] >= OBSTACLE_CENTRE[1]:
            self.side = "left" if self.agent[0] < OBSTACLE_CENTRE[0] else "right"

    def get_state(self) -> np.ndarray:
        """The full state: agent xy, goal xy (float64 (4,))."""
        return np.concatenate([self.agent, self.goal])

    def _obs(self) -> dict[str, np.ndarray]:
        return {"obs": self.get_state().astype(np.float32)}

    def _info(self) -> dict:
        return {"score": float(self.succeeded), "is_success": self.succeeded, "side": self.side,
                "touched": self.touched}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and options.get("reset_to_state") is not None:
            state = np.asarray(options["reset_to_state"], dtype=np.float64)
            if state.shape != (4,):
                raise ValueError(f"TwoPathsEnv reset_to_state expects (4,) = agent xy, goal xy; got {state.shape}")
            self.agent, self.goal = state[:2].copy(), state[2:].copy()
        else:
            # Starts stay near the centre line (x jitter 1/5 of y's) so both sides stay equally plausible there.
            u = self.np_random.uniform(-1.0, 1.0, size=4) * self.init_noise * np.array([0.2, 1.0, 1.0, 1.0])
            self.agent, self.goal = START + u[:2], GOAL + u[2:]
        self._reset_flags()
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(2)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"TwoPathsEnv action must be finite; got {action}")
        target = np.clip(action, -BOUND, BOUND)
        delta = target - self.agent
        norm = np.linalg.norm(delta)
        if norm > self.max_step:
            delta *= self.max_step / norm
        new = self.agent + delta
        t_hit = segment_hits_disk(self.agent, new, OBSTACLE_CENTRE, OBSTACLE_RADIUS)
        if t_hit is not None:  # stop at the contact point; the episode is lost
            new = self.agent + t_hit * delta
            self.touched = True
        self.agent = new
        self.n_steps += 1
        self._update_side()
        if not self.touched and np.linalg.norm(self.agent - self.goal) <= self.goal_radius:
            self.succeeded = True
        terminated = self.touched or self.succeeded
        truncated = not terminated and self.n_steps >= self.max_steps
        return self._obs(), float(self.succeeded), terminated, truncated, self._info()

    def render(self):
        """uint8 (H, W, 3): obstacle grey, goal green, agent blue (red after touching), y up."""
        n = self.render_size
        coords = (np.arange(n) + 0.5) / n * 2 * BOUND - BOUND
        x, y = np.meshgrid(coords, coords[::-1])
        img = np.full((n, n, 3), 255, dtype=np.uint8)

        def disk(c, r):
            return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= r**2

        img[disk(OBSTACLE_CENTRE, OBSTACLE_RADIUS)] = (120, 120, 120)
        img[disk(self.goal, self.goal_radius)] = (40, 180, 60)
        img[disk(self.agent, max(0.04, 2 * BOUND / n))] = (220, 40, 40) if self.touched else (40, 80, 220)
        return img
