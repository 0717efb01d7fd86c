"""MuJoCo's GL backend, chosen once in envs/rendering.py, and the render_mode check every env shares."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.rendering import choose_gl_backend, cuda_device_visible
from envs.two_paths import TwoPathsEnv

REPO = Path(__file__).resolve().parents[1]


def test_backend_follows_the_gpu_and_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden: EGL's NVIDIA path cannot work
    assert not cuda_device_visible()
    assert choose_gl_backend() == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delenv("PYOPENGL_PLATFORM")
    monkeypatch.setenv("MUJOCO_GL", "glx")
    assert choose_gl_backend() == "glx" and os.environ["PYOPENGL_PLATFORM"] == "glx"


def test_importing_the_simulators_renders_with_the_chosen_backend(tmp_path):
    """A fresh process with nothing set: the backend is decided by `import envs`, robosuite (which would pick egl
    itself) leaves it alone, and a MuJoCo frame renders with it."""
    pytest.importorskip("robosuite")
    code = (
        "import os, envs.robomimic, envs.kitchen\n"
        "from envs.kitchen import KitchenEnv\n"
        "env = KitchenEnv(render_size=(24, 32)); env.reset(seed=0); frame = env.render()\n"
        "print(os.environ['MUJOCO_GL'], os.environ['PYOPENGL_PLATFORM'], frame.shape, int(frame.std() > 0))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    expected = "egl" if cuda_device_visible() else "osmesa"
    assert out.stdout.split("\n")[-2] == f"{expected} {expected} (24, 32, 3) 1"


def test_unknown_render_mode_is_refused_naming_the_env():
    with pytest.raises(ValueError, match=r"TwoPathsEnv: render_mode must be None or 'rgb_array', got 'human'"):
        TwoPathsEnv(render_mode="human")
