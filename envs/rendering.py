"""The one place that picks MuJoCo's OpenGL backend (robosuite and gymnasium-robotics both render through MuJoCo),
the render_mode check every env shares, and the fast MuJoCo renderer the robosuite and kitchen envs share.

MuJoCo reads ``MUJOCO_GL`` when it is first imported and PyOpenGL reads ``PYOPENGL_PLATFORM`` when it is first
imported, so the choice has to be made before any simulator import: ``envs/__init__.py`` calls
``choose_gl_backend()`` first thing, and every simulator module lives under ``envs``. A value the user exported is
kept as it is.
"""

from __future__ import annotations

import glob
import os

import numpy as np

RENDER_MODES = (None, "rgb_array")


def cuda_device_visible() -> bool:
    """Whether this process can see an NVIDIA GPU, without importing torch (initialising CUDA here would break
    forked workers later): a device node exists and CUDA_VISIBLE_DEVICES does not hide every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_gl_backend() -> str:
    """Set MUJOCO_GL (egl with a visible CUDA device, else osmesa: EGL needs the NVIDIA driver, OSMesa renders on
    the CPU anywhere) and PYOPENGL_PLATFORM to match, unless the user set them; returns the backend in use."""
    os.environ.setdefault("MUJOCO_GL", "egl" if cuda_device_visible() else "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    try:
        # Load triton's LLVM before any simulator pulls in Mesa's OSMesa (llvmpipe, its own LLVM): in the other order,
        # importing torchvision (-> torch._dynamo -> triton) segfaults the process (measured with MUJOCO_GL=osmesa).
        import triton  # noqa: F401
    except ImportError:  # CPU-only torch builds ship no triton, and then there is nothing to clash with
        pass
    return os.environ["MUJOCO_GL"]


def check_render_mode(env_name: str, render_mode: str | None) -> None:
    """Our envs render ``rgb_array`` frames on request, or nothing (None: no renderer is ever built)."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"{env_name}: render_mode must be None or 'rgb_array', got {render_mode!r}")


class FastRenderer:
    """Offscreen MuJoCo frames at (H, W) with MSAA, shadows and reflections off: on a CPU those effects, not the
    pixel count, are the cost (a 240x360 kitchen frame took ~440 ms with them, ~20 ms without)."""

    def __init__(self, model, height: int, width: int, hide_geom_groups: tuple[int, ...] = ()):
        """``hide_geom_groups``: geom groups not drawn (robosuite hides its collision geoms, group 0, and so do its
        cameras: robomimic's images are made without them)."""
        import mujoco  # here, not at the top: this module is imported before the GL backend is chosen

        self._mujoco = mujoco
        self.option = mujoco.MjvOption()
        for group in hide_geom_groups:
            self.option.geomgroup[group] = 0
        model.vis.quality.offsamples = 0  # read when the GL context is made: no multisample buffer
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.renderer = mujoco.Renderer(model, height=height, width=width)

    def render(self, data, camera) -> np.ndarray:
        """A uint8 (H, W, 3) frame of ``data`` from ``camera`` (a camera name or an ``MjvCamera``)."""
        flags = self._mujoco.mjtRndFlag
        self.renderer.update_scene(data, camera=camera, scene_option=self.option)
        # scene flags, re-applied at every render because resets may rebuild the scene options
        self.renderer.scene.flags[flags.mjRND_SHADOW] = 0
        self.renderer.scene.flags[flags.mjRND_REFLECTION] = 0
        return self.renderer.render().copy()

    def close(self) -> None:
        # mujoco's Renderer.close frees its GL context BEFORE its MjrContext, so the MjrContext's GL objects get
        # deleted in whichever context is current, i.e. another env's renderer (garbage images there). Free the
        # MjrContext inside our own context first.
        r, self.renderer = self.renderer, None
        if r is None:
            return
        if r._gl_context is not None and r._mjr_context is not None:
            r._gl_context.make_current()
            r._mjr_context.free()
            r._mjr_context = None
        r.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the GL library may already be gone
            pass
