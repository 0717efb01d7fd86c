"""Diffusion Policy's zarr world (zarr 2.18.3, numcodecs < 0.16) reads the stores we write."""

import numpy as np
import zarr
from other_tools import run_tool

from drifting_policy.data.replay_buffer import ReplayBuffer

# What Diffusion Policy's ReplayBuffer.copy_from_path does: open read-only, every data/<key> and meta/episode_ends
READ_AS_DP = """
import sys, json, numpy as np, zarr
root = zarr.open(sys.argv[1], mode="r")
arrays = {f"data/{k}": root["data"][k][:] for k in root["data"].array_keys()}
arrays["meta/episode_ends"] = root["meta"]["episode_ends"][:]
np.savez(sys.argv[2], **arrays)
print(json.dumps({"zarr": zarr.__version__}))
"""


def test_zarr_2_18_reads_our_default_store_as_diffusion_policy_does(tmp_path):
    rng = np.random.default_rng(0)
    rb = ReplayBuffer()
    for length in (7, 5):
        rb.add_episode({"img": rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8),
                        "state": rng.normal(size=(length, 5)),
                        "action": rng.normal(size=(length, 2)).astype(np.float32)})
    rb.save(tmp_path / "demo.zarr", chunk_steps=4)  # several chunks per array

    out = run_tool("zarr2", READ_AS_DP, tmp_path / "demo.zarr", tmp_path / "read.npz", cwd=tmp_path)

    assert out["zarr"] == "2.18.3"
    read = np.load(tmp_path / "read.npz")
    assert sorted(read.files) == ["data/action", "data/img", "data/state", "meta/episode_ends"]
    np.testing.assert_array_equal(read["meta/episode_ends"], [7, 12])
    for key, arr in rb.data.items():
        assert read[f"data/{key}"].dtype == arr.dtype
        np.testing.assert_array_equal(read[f"data/{key}"], arr)


def test_stores_default_to_zarr_format_2(tmp_path):
    ReplayBuffer({"a": np.zeros((2, 1))}, [2]).save(tmp_path / "s.zarr")
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r").metadata.zarr_format == 2
