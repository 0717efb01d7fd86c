"""Run another tool (zarr 2.x, robomimic, lerobot) on files we wrote, in its test-only venv, in a subprocess.

The venvs are built by scripts/setup_test_readers.sh (scripts/setup.sh runs it). A missing venv fails the test, so
CI never passes without the other tool having read our files; DP_ALLOW_MISSING_READERS=1 turns that into a skip.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

VENVS = Path(__file__).resolve().parents[1] / ".venvs"


def tool_python(venv: str) -> str:
    python = VENVS / venv / "bin" / "python"
    if not python.exists():
        msg = f"{python} is missing: build the test-only reader venvs with `bash scripts/setup_test_readers.sh`"
        if os.environ.get("DP_ALLOW_MISSING_READERS") == "1":
            pytest.skip(msg)
        pytest.fail(msg)
    return str(python)


def run_tool(venv: str, code: str, *args, cwd: Path, timeout: float = 300) -> dict:
    """Run ``code`` (which gets ``args`` as sys.argv[1:]) with the venv's python; it prints one JSON line last."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the tool sees its venv, not our checkout
    env |= {"HF_HOME": str(cwd / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([tool_python(venv), "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{venv} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
