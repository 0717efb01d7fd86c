"""Policy rollouts: observation history and chunk execution live here, in the env wrapper, never in the policy.

``MultiStepWrapper`` keeps the last To observations (the first one repeated after reset) and executes a chunk of Ta
actions per policy call. ``rollout`` runs many episodes in lockstep, batching the policy call across them, and
scores each as Diffusion Policy does: the maximum of ``info["score"]`` over the episode.
"""

from __future__ import annotations

import functools
import warnings
from collections import deque
from pathlib import Path

import gymnasium as gym
import imageio
import numpy as np
import torch
from tqdm import tqdm

from drifting_policy.evaluation.workers import WORKER_DIED, LocalEnvs, WorkerEnvs


class MultiStepWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, n_obs_steps: int, n_action_steps: int, record: bool = False):
        super().__init__(env)
        self.n_obs_steps, self.n_action_steps, self.record = n_obs_steps, n_action_steps, record
        self.history: deque = deque(maxlen=n_obs_steps)
        self.frames: list[np.ndarray] = []
        self.max_score, self.success, self.n_completed, self.length = 0.0, False, 0, 0
        self._closed = False

    def close(self):
        if not self._closed:  # idempotent: rollouts close early (before writing videos) and again in a finally
            self._closed = True
            super().close()

    def _stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self.history]) for k in self.history[0]}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.history.clear()
        self.history.extend([obs] * self.n_obs_steps)
        self.frames = [self.env.render()] if self.record else []
        self.max_score, self.success, self.n_completed, self.length = 0.0, False, 0, 0
        return self._stacked(), info

    def step(self, actions: np.ndarray):
        """actions (Ta, Da) -> stacked obs {key: (To, ...)}, summed reward, terminated, truncated, last info."""
        total, terminated, truncated, info = 0.0, False, False, {}
        for action in actions[: self.n_action_steps]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.history.append(obs)
            total += float(reward)
            self.length += 1
            self.max_score = max(self.max_score, float(info.get("score", reward)))
            self.success |= bool(info.get("is_success", False))
            self.n_completed = max(self.n_completed, int(info.get("n_completed", 0)))
            if self.record:
                self.frames.append(self.env.render())
            if terminated or truncated:
                break
        return self._stacked(), total, terminated, truncated, info


def obs_to_torch(obs_list: list[dict[str, np.ndarray]], shape_meta: dict) -> dict[str, torch.Tensor]:
    """Per-env stacked obs -> batched tensors {key: (B, To, ...)}; rgb (To, H, W, 3) uint8 -> (To, 3, H, W) in [0, 1]."""
    out = {}
    for key, meta in shape_meta["obs"].items():
        batch = np.stack([o[key] for o in obs_list])
        if meta.get("type", "low_dim") == "rgb":
            out[key] = torch.from_numpy(np.moveaxis(batch, -1, 2).astype(np.float32) / 255.0)
        else:
            out[key] = torch.from_numpy(batch.astype(np.float32))
    return out


def _write_video(frames: list, path: Path, env_name: str, fps: float = 10) -> Path | None:
    """Write an episode's frames as mp4 at the env's control rate (``metadata["render_fps"]``: PushT 10 Hz,
    robosuite 20 Hz); a missing frame or a failed write warns (a video never ends a training run)."""
    if not frames or any(f is None for f in frames):
        warnings.warn(f"{env_name}.render() returned no frame (construct it with render_mode='rgb_array'): "
                      f"{path.name} not written", stacklevel=2)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    except Exception as e:  # ENOMEM forking ffmpeg from a large process; without imageio-ffmpeg imageio picks a
        # writer that rejects fps (TypeError)
        warnings.warn(f"video {path} not written ({type(e).__name__}: {e}); mp4 needs the imageio-ffmpeg package", stacklevel=2)
        return None
    return path


def _scalar_info(info: dict) -> dict:
    """The JSON-able scalars of a final info dict (mode labels, completed subtasks...) and its small float vectors
    (e.g. PushT's final agent + block state), so an episode's outcome can be compared exactly."""
    keep = {}
    for k, v in info.items():
        if isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            keep[k] = v.item() if hasattr(v, "item") else v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            keep[k] = list(v)
        elif isinstance(v, np.ndarray) and v.ndim == 1 and v.size <= 16 and v.dtype.kind == "f":
            keep[k] = [float(x) for x in v]
    return keep


def _wrapped(make_env, n_obs_steps: int, n_action_steps: int, record: bool) -> MultiStepWrapper:
    return MultiStepWrapper(make_env(), n_obs_steps, n_action_steps, record=record)


@torch.no_grad()
def rollout(policy, make_env, resets: list[dict], n_obs_steps: int, n_action_steps: int, n_videos: int = 0,
            video_dir: Path | None = None, batch_size: int = 50, desc: str = "rollout", seed: int = 0,
            n_workers: int = 0) -> list[dict]:
    """Run one episode per entry of ``resets`` (keyword arguments of ``env.reset``, e.g. ``{"seed": 100000}``).

    Returns one dict per episode: score (max over the episode), success, n_completed, length, the final info's
    scalars, ``error`` if its environment raised (the episode counts as failed), and ``video`` (a path) for the
    first ``n_videos`` episodes.

    ``batch_size`` episodes run in lockstep, their two halves in turn (one policy call per half and step);
    ``n_workers`` > 1 steps their environments in that many worker processes, one half while the policy computes
    the other's actions (``make_env`` must then be picklable, as ``factory.env_factory``'s is). Deterministic given its arguments, with or without workers: the policy's sampling noise comes from torch's
    global generator, seeded with ``seed`` inside a forked RNG state, so the caller's (training's) random stream is
    left exactly as it was and the same checkpoint on the same resets scores the same every time.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    make_wrapped = functools.partial(_wrapped, make_env, n_obs_steps, n_action_steps)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        results: list[dict] = []
        policy.eval()
        bar = tqdm(total=len(resets), desc=desc, leave=False)
        workers = min(n_workers, len(resets))
        pool = WorkerEnvs(make_wrapped, workers) if workers > 1 else None  # one set of processes for all batches
        try:
            for first in range(0, len(resets), batch_size):
                chunk = resets[first : first + batch_size]
                record = [first + i < n_videos for i in range(len(chunk))]
                envs = pool.open(len(chunk), record) if pool is not None else LocalEnvs(make_wrapped, len(chunk),
                                                                                         record)
                try:
                    done = _run_episodes(policy, envs, chunk, first, video_dir, bar)
                finally:  # free the simulators (and their GL contexts), also when something failed
                    if pool is None:
                        envs.close()
                for i, result in enumerate(done):  # a dead worker took these along: each again, alone
                    if result.get("error", "").startswith(WORKER_DIED):
                        alone = WorkerEnvs(make_wrapped, 1)
                        try:
                            done[i] = _run_episodes(policy, alone.open(1, [record[i]]), [chunk[i]], first + i,
                                                    video_dir, None)[0]
                            done[i]["rerun_alone"] = True
                            if "error" in done[i]:
                                warnings.warn(f"episode {first + i} ({chunk[i]}) ended its worker process, also when "
                                              f"run alone: {done[i]['error']}", stacklevel=2)
                        finally:
                            alone.close()
                results += done
        finally:
            if pool is not None:
                pool.close()
        bar.close()
    return results


def _run_episodes(policy, envs, resets: list[dict], first: int, video_dir, bar) -> list[dict]:
    """Step ``envs`` in lockstep, one batched policy call per half of the episodes and step. An episode whose
    environment raises is ended and reported as failed (``error``), without losing the others."""
    n = len(resets)
    done, final_info = [False] * n, [{} for _ in range(n)]
    errors: list[str | None] = [None] * n
    obs: list = [None] * n

    def fail(i: int, message: str) -> None:
        errors[i], done[i] = message, True
        if not message.startswith(WORKER_DIED):  # those are rerun alone (rollout); their own rerun reports
            warnings.warn(f"episode {first + i} ({resets[i]}) ended by an environment error: {message}", stacklevel=3)
        if bar is not None:
            bar.update(1)

    for i, (ok, value) in enumerate(envs.reset(resets)):
        if ok:
            obs[i] = value
        else:
            fail(i, value)
    def receive() -> None:
        for i, (ok, value) in envs.step_receive().items():
            if not ok:
                fail(i, value)
                continue
            obs[i], _, terminated, truncated, final_info[i] = value
            if terminated or truncated:
                done[i] = True
                if bar is not None:
                    bar.update(1)

    # Two halves (even / odd slots) take turns: the policy computes one half's actions while the other half's
    # environments step in the workers. The same calls in the same order without workers, so the same results.
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    in_flight = False
    while True:
        for half in halves:
            active = [i for i in half if not done[i]]
            if active:
                actions = policy.predict_action(obs_to_torch([obs[i] for i in active], policy.shape_meta))["action"]
            if in_flight:
                receive()
                in_flight = False
            if active:
                envs.step_send(dict(zip(active, actions.cpu().numpy())))
                in_flight = True
        if all(done) and not in_flight:
            break
    results = []
    for i, (end, kw) in enumerate(zip(envs.finish(), resets)):
        end = end or {"max_score": 0.0, "success": False, "n_completed": 0, "length": 0, "frames": None}
        if errors[i] is not None:
            end |= {"max_score": 0.0, "success": False}
        result = _scalar_info(final_info[i]) | {
            "reset": {k: (v if isinstance(v, int) else "state") for k, v in kw.items()},
            "score": end["max_score"], "success": end["success"], "n_completed": end["n_completed"],
            "length": end["length"],
        }
        if errors[i] is not None:
            result["error"] = errors[i]
        if end["frames"] is not None and video_dir is not None:
            path = _write_video(end["frames"], video_dir / f"episode_{first + i:03d}.mp4", end["env_name"], end["fps"])
            if path is not None:
                result["video"] = str(path)
        results.append(result)
    return results


def summarize(results: list[dict], n_stages: int | None = None, mode_statistics=None) -> dict:
    """Mean score, success rate, mean length, p_n (fraction of episodes completing >= n of ``n_stages``) and, for
    multimodal tasks, the task's mode split (``mode_statistics``: the env's function over the episodes' final
    infos, ``factory.env_mode_statistics``)."""
    scores = np.array([r["score"] for r in results])
    summary = {"n_episodes": len(results), "mean_score": float(scores.mean()),
               "success_rate": float(np.mean([r["success"] for r in results])),
               "mean_length": float(np.mean([r["length"] for r in results]))}
    n_completed = np.array([r["n_completed"] for r in results])
    for n in range(1, (n_stages or int(n_completed.max(initial=0))) + 1):
        summary[f"p{n}"] = float((n_completed >= n).mean())
    if mode_statistics is not None:
        summary |= {f"mode/{k}": v for k, v in mode_statistics(results).items()}
    return summary
