"""Demo generation for Lift, Can and ToolHang in robomimic's HDF5 layout.

    data                 attrs: env_args (JSON: env_name, type 1 = robosuite, env_kwargs), total
    data/demo_i          attrs: num_samples, seed, model_file (the MuJoCo XML, as robosuite gives it),
                                final_state (the flat state after the last action)
        obs/<key>        (T, ...) object, robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos [, <camera>_image]
        next_obs/<key>   (T, ...) the observation after each action (robomimic's SequenceDataset loads it by default)
        actions          (T, 7)   delta actions (robomimic's convention)
        states           (T, S)   flat MuJoCo states, the state each action was taken from
        rewards, dones   (T,)
    mask/train, mask/valid      demo names

Episodes are generated state-only (fast); image observations are re-rendered from the stored states in a second
pass with the evaluation renderer, so training and evaluation images match.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from envs.experts.collect import collect_demos
from envs.experts.robomimic_servo import Perturbation
from envs.robomimic import TASKS, RobomimicEnv, canonical_env_name, robosuite_kwargs

ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE


def _expert(env_name: str):
    if env_name == "Lift":
        from envs.experts.robomimic_lift_can import lift_expert

        return lift_expert, 45
    if env_name == "PickPlaceCan":
        from envs.experts.robomimic_lift_can import can_expert

        return can_expert, 120
    from envs.experts.robomimic_tool_hang import tool_hang_expert

    return tool_hang_expert, 400


def run_expert_episode(env: RobomimicEnv, seed: int, perturb_prob: float = 0.3, extra_steps: int = 3) -> dict:
    """One expert episode from reset(seed); returns its record and whether it succeeded."""
    expert, typical_len = _expert(env.env_name)
    rng = np.random.default_rng([seed, 7])
    env.reset(seed=seed)
    perturbation = Perturbation.sample(rng, 3, int(0.5 * typical_len)) if rng.random() < perturb_prob else None
    states, actions, obs, rewards = [], [], [], []
    policy, success_at, n_free = expert(env, rng), None, 0
    for t in range(env.max_steps):
        try:
            action, perturbable = next(policy)
        except StopIteration:
            break
        if perturbation is not None and perturbable:  # the perturbation clock runs in free-space steps only
            action = perturbation.apply(n_free, action, rng)
            n_free += 1
        states.append(env.get_state())
        obs.append(env.raw_obs())
        actions.append(action)
        _, reward, _, _, info = env.step(action)
        rewards.append(reward)
        if info["is_success"] and success_at is None:
            success_at = t
        if success_at is not None and t >= success_at + extra_steps:
            break
    final_obs = env.raw_obs()
    return {
        "success": success_at is not None and rewards[-1] > 0,
        "seed": seed,
        "length": len(actions),
        "perturbed": perturbation is not None,
        "states": np.array(states),
        "actions": np.array(actions, dtype=np.float64),
        "obs": {k: np.stack([o[k] for o in obs]) for k in obs[0]},
        "next_obs": {k: np.stack([o[k] for o in obs[1:]] + [final_obs[k]]) for k in obs[0]},
        "final_state": env.get_state(),
        "rewards": np.array(rewards, dtype=np.float64),
    }


def env_args_json(env_name: str) -> str:
    kwargs = robosuite_kwargs(env_name, abs_action=False)
    name = kwargs.pop("env_name")
    return json.dumps({"env_name": name, "type": ROBOSUITE_ENV_TYPE, "env_version": "1.5.2", "env_kwargs": kwargs})


def write_episodes(path: Path, env_name: str, episodes: list[dict], model_xml: str, valid_ratio: float = 0.1) -> None:
    """Episodes as run_expert_episode returns them; ``model_xml``: the env's MuJoCo XML (one model for every demo:
    the model is built once, from a fixed seed), which robomimic's playback and re-rendering scripts reset to."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = env_args_json(env_name)
        data.attrs["generated_by"] = GENERATED_BY
        data.attrs["total"] = int(sum(len(e["actions"]) for e in episodes))
        names = []
        for i, ep in enumerate(episodes):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = len(ep["actions"])
            g.attrs["seed"] = ep["seed"]
            g.attrs["model_file"] = model_xml
            g.attrs["final_state"] = ep["final_state"]
            for k, v in ep["obs"].items():
                g.create_dataset(f"obs/{k}", data=v)
                g.create_dataset(f"next_obs/{k}", data=ep["next_obs"][k])
            g.create_dataset("actions", data=ep["actions"])
            g.create_dataset("states", data=ep["states"])
            g.create_dataset("rewards", data=ep["rewards"])
            dones = np.zeros(len(ep["actions"]), dtype=np.int64)
            dones[-1] = 1
            g.create_dataset("dones", data=dones)
            names.append(f"demo_{i}")
        n_valid = int(round(valid_ratio * len(names)))
        f.create_dataset("mask/valid", data=np.array(names[len(names) - n_valid:], dtype="S"))
        f.create_dataset("mask/train", data=np.array(names[: len(names) - n_valid], dtype="S"))


# Bump when the cameras render differently, so that image demos rendered before are rendered again (prepare_dataset):
# 2 = collision geoms hidden as robosuite hides them (1 drew them: 8-15 / 255 mean pixel error against robomimic's).
RENDER_VERSION = 2
GENERATED_BY = "drifting_policy"  # data attribute of the files our experts write (never re-render a public file)


def stale_images(path: str | Path) -> dict | None:
    """For one of our own image files rendered by an older camera version: {"camera_names", "image_size"} to render
    it again with; None for a file without images, a current one, or a file we did not write."""
    with h5py.File(path, "r") as f:
        data = f["data"]
        demo = data[sorted(data.keys())[0]] if len(data) else None
        ours = data.attrs.get("generated_by") == GENERATED_BY or (
            demo is not None and "seed" in demo.attrs and "final_state" in demo.attrs)  # written before the attribute
        images = sorted(k for k in (demo["obs"].keys() if demo is not None and "obs" in demo else []) if k.endswith("_image"))
        if not ours or not images or int(data.attrs.get("render_version", 1)) == RENDER_VERSION:
            return None
        return {"camera_names": [k[: -len("_image")] for k in images], "image_size": int(demo["obs"][images[0]].shape[1])}


def add_images(path: str | Path, camera_names: list[str] | None = None, image_size: int | None = None) -> float:
    """Render <camera>_image observations for every stored state of an HDF5 file, in place; returns seconds."""
    start = time.time()
    with h5py.File(path, "r+") as f:
        f["data"].attrs["render_version"] = RENDER_VERSION
        env_name = json.loads(f["data"].attrs["env_args"])["env_name"]
        env = RobomimicEnv(env_name, obs_type="visual", abs_action=False, camera_names=camera_names,
                           image_size=image_size)
        env.reset(seed=0)
        demos = sorted(f["data"].keys(), key=lambda s: int(s.split("_")[-1]))
        for name in tqdm(demos, desc=f"render {env_name} images"):
            if "final_state" not in f[f"data/{name}"].attrs:
                raise KeyError(f"{path}: data/{name} has no 'final_state' attribute, needed for its last next_obs image")
            states = np.concatenate([f[f"data/{name}/states"][:], f[f"data/{name}"].attrs["final_state"][None]])
            frames = {f"{c}_image": [] for c in env.camera_names}
            for s in states:
                env.set_state(s)
                for k, img in env.render_cameras().items():
                    frames[k].append(img)
            for k, v in frames.items():
                for group, images in (("obs", v[:-1]), ("next_obs", v[1:])):
                    key = f"data/{name}/{group}/{k}"
                    if key in f:
                        del f[key]
                    f.create_dataset(key, data=np.stack(images), chunks=(1, *v[0].shape), compression="gzip",
                                     compression_opts=4)
        env.close()
    return time.time() - start


def generate(env_name: str, out_path: str | Path, n: int, seed: int = 0, render_images: bool = False,
             camera_names: list[str] | None = None, image_size: int | None = None, perturb_prob: float = 0.3,
             max_attempts: int | None = None, valid_ratio: float = 0.1) -> dict:
    """Run the expert until ``n`` episodes succeed (seeds seed, seed + 1, ..., the test seeds skipped); write them
    atomically, with images rendered from the stored states when ``render_images``."""
    env_name = canonical_env_name(env_name)
    out_path = Path(out_path)
    env = RobomimicEnv(env_name, obs_type="state", abs_action=False, max_steps=TASKS[env_name]["max_steps"])
    model_xml = env.rs_env.sim.model.get_xml()
    try:
        episodes, stats = collect_demos(lambda s: run_expert_episode(env, s, perturb_prob), n, seed, task=env_name,
                                        max_attempts=max_attempts)
    finally:
        env.close()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        write_episodes(Path(tmp), env_name, episodes, model_xml, valid_ratio)
        render_seconds = add_images(tmp, camera_names, image_size) if render_images else 0.0
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        shutil.move(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stats | {
        "env_name": env_name,
        "max_length": int(max(e["length"] for e in episodes)),
        "perturbed_fraction": float(np.mean([e["perturbed"] for e in episodes])),
        "render_seconds": render_seconds,
        "path": str(out_path),
    }


def generate_lift(out_path, n, seed=0, render_images=False, **kwargs) -> dict:
    return generate("Lift", out_path, n, seed, render_images, **kwargs)


def generate_can(out_path, n, seed=0, render_images=False, **kwargs) -> dict:
    return generate("PickPlaceCan", out_path, n, seed, render_images, **kwargs)


def generate_tool_hang(out_path, n, seed=0, render_images=False, **kwargs) -> dict:
    return generate("ToolHang", out_path, n, seed, render_images, **kwargs)


def evaluate_expert(env_name: str, seeds, perturb_prob: float = 0.0) -> dict:
    """Expert success on the given reset seeds (docs/notes/robomimic.md uses the test seeds 100000-100049)."""
    env = RobomimicEnv(canonical_env_name(env_name), obs_type="state", abs_action=False)
    results, start = [], time.time()
    for seed in tqdm(list(seeds), desc=f"{env_name} expert"):
        ep = run_expert_episode(env, int(seed), perturb_prob)
        results.append((int(seed), bool(ep["success"]), len(ep["actions"])))
    env.close()
    lengths = [n for _, ok, n in results if ok]
    return {
        "env_name": env_name,
        "n": len(results),
        "success_rate": float(np.mean([ok for _, ok, _ in results])),
        "mean_length_successes": float(np.mean(lengths)) if lengths else None,
        "seconds_per_episode": (time.time() - start) / max(len(results), 1),
        "failed_seeds": [s for s, ok, _ in results if not ok],
    }
