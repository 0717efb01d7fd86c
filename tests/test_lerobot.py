"""LeRobotDataset v3.0 in and out: our exporter and reader, against lerobot 0.4.4 itself (in its test-only venv)."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_lowdim_store
from other_tools import run_tool

from drifting_policy.data.dataset import load_replay_buffer
from drifting_policy.data.lerobot import load_lerobot
from drifting_policy.data.lerobot_export import export_lerobot
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.training.trainer import Trainer

CODEC_MEAN_ERR, CODEC_MAX_ERR = 4.0, 64  # AV1 at lerobot's crf 30 on 32x32 frames (seen: 2.7 / 45), uint8 levels


def demo_buffer(lengths=(12, 7, 15), seed=0) -> ReplayBuffer:
    """Episodes like our generators write: a moving blob on a gradient (images), states, actions, rewards."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    rb = ReplayBuffer()
    for n in lengths:
        centre = rng.uniform(8, 24, 2) + np.cumsum(rng.normal(0, 0.7, (n, 2)), 0)
        blob = np.exp(-((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) / 30)
        img = np.stack([60 + 150 * blob, 40 + 3 * xx + 0 * blob, 200 - 120 * blob], -1).astype(np.uint8)
        rb.add_episode({"agentview_image": img, "state": rng.normal(size=(n, 5)),
                        "action": rng.normal(size=(n, 2)).astype(np.float32), "reward": rng.random(n)})
    return rb


def assert_images_close(decoded: np.ndarray, original: np.ndarray):
    err = np.abs(decoded.astype(np.int16) - original.astype(np.int16))
    assert decoded.shape == original.shape
    assert err.mean() < CODEC_MEAN_ERR and err.max() < CODEC_MAX_ERR, (err.mean(), err.max())


def test_export_then_read_gives_back_the_episodes(tmp_path):
    rb = demo_buffer()
    export_lerobot(rb, tmp_path / "lerobot", fps=20, task="lift the cube")

    back = load_lerobot(tmp_path / "lerobot")

    np.testing.assert_array_equal(back.episode_ends, rb.episode_ends)
    assert set(back.data) == {"observation.images.agentview_image", "observation.state", "action",
                              "observation.reward"}
    for ours, theirs in (("state", "observation.state"), ("action", "action"), ("reward", "observation.reward")):
        assert back.data[theirs].dtype == rb.data[ours].dtype
        np.testing.assert_array_equal(back.data[theirs], rb.data[ours])
    assert_images_close(back.data["observation.images.agentview_image"], rb.data["agentview_image"])
    assert not list(tmp_path.glob("*.tmp"))


# lerobot's own dataset class, with its default video backend (torchcodec), frame by frame as a training loop reads it
READ_AS_LEROBOT = """
import sys, json, numpy as np, lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/ours", root=sys.argv[1])
items = [ds[i] for i in range(len(ds))]
keys = [k for k in items[0] if k != "task"]
np.savez(sys.argv[2], **{k.replace("/", "|"): np.stack([it[k].numpy() for it in items]) for k in keys})
print(json.dumps({"lerobot": lerobot.__version__, "backend": ds.video_backend, "episodes": ds.meta.total_episodes,
                  "tasks": sorted({it["task"] for it in items}), "fps": ds.fps,
                  "stats_keys": sorted(ds.meta.stats)}))
"""


def test_lerobot_0_4_reads_our_export_frame_by_frame(tmp_path):
    rb = demo_buffer()
    export_lerobot(rb, tmp_path / "lerobot", fps=20, task="lift the cube")

    out = run_tool("lerobot", READ_AS_LEROBOT, tmp_path / "lerobot", tmp_path / "read.npz", cwd=tmp_path)

    assert out["lerobot"] == "0.4.4" and out["backend"] == "torchcodec"
    assert out["episodes"] == 3 and out["tasks"] == ["lift the cube"] and out["fps"] == 20
    assert {"action", "observation.state", "observation.images.agentview_image"} <= set(out["stats_keys"])
    read = np.load(tmp_path / "read.npz")
    np.testing.assert_array_equal(read["episode_index"], np.repeat([0, 1, 2], rb.episode_lengths))
    np.testing.assert_array_equal(read["action"], rb.data["action"])
    # lerobot hands float64 features out as float32
    np.testing.assert_array_equal(read["observation.state"].astype(np.float32), rb.data["state"].astype(np.float32))
    images = np.moveaxis(read["observation.images.agentview_image"], 1, -1) * 255  # lerobot: (3, H, W) in [0, 1]
    assert_images_close(np.round(images).astype(np.uint8), rb.data["agentview_image"])


WRITE_AS_LEROBOT = """
import sys, json, numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
src = np.load(sys.argv[2])
features = {"observation.state": {"dtype": "float32", "shape": (5,), "names": None},
            "action": {"dtype": "float32", "shape": (2,), "names": None},
            "observation.images.agentview": {"dtype": "video", "shape": (32, 32, 3),
                                             "names": ["height", "width", "channels"]}}
ds = LeRobotDataset.create("local/theirs", fps=20, root=sys.argv[1], features=features, use_videos=True)
start = 0
for end in src["episode_ends"]:
    for t in range(start, end):
        ds.add_frame({"observation.state": src["state"][t], "action": src["action"][t],
                      "observation.images.agentview": src["image"][t], "task": "lift the cube"})
    ds.save_episode()
    start = end
ds.finalize()
print(json.dumps({"codebase_version": ds.meta.info["codebase_version"]}))
"""


def test_our_reader_reads_a_folder_lerobot_wrote(tmp_path):
    rb = demo_buffer(lengths=(9, 14))
    np.savez(tmp_path / "src.npz", state=rb.data["state"].astype(np.float32), action=rb.data["action"],
             image=rb.data["agentview_image"], episode_ends=rb.episode_ends)
    out = run_tool("lerobot", WRITE_AS_LEROBOT, tmp_path / "theirs", tmp_path / "src.npz", cwd=tmp_path)
    assert out["codebase_version"] == "v3.0"

    back = load_lerobot(tmp_path / "theirs")

    np.testing.assert_array_equal(back.episode_ends, rb.episode_ends)
    np.testing.assert_array_equal(back.data["observation.state"], rb.data["state"].astype(np.float32))
    np.testing.assert_array_equal(back.data["action"], rb.data["action"])
    assert_images_close(back.data["observation.images.agentview"], rb.data["agentview_image"])  # episode 2 too


def test_one_epoch_trains_on_a_lerobot_folder_named_by_path(tiny_cfg, tmp_path):
    store = ReplayBuffer.load(make_lowdim_store(tmp_path / "src.zarr"))
    export_lerobot(store, tmp_path / "demos" / "lerobot", fps=10)
    cfg = tiny_cfg()
    cfg.training.num_epochs = 1
    cfg.task.dataset = {"path": str(tmp_path / "demos" / "lerobot"), "obs_from_store": {"obs": ["observation.obs"]},
                        "action_key": "action", "val_ratio": 0.2, "max_train_episodes": None}

    Trainer(cfg).run()

    records = [json.loads(line) for line in open(os.path.join(cfg.run_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1] and np.isfinite(records[0]["train_loss"])
    np.testing.assert_array_equal(load_replay_buffer(cfg.task.dataset).data["observation.obs"], store.data["obs"])


def test_v2_folder_is_refused_naming_version_and_converter(tmp_path):
    (tmp_path / "old" / "meta").mkdir(parents=True)
    (tmp_path / "old" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 10}))
    with pytest.raises(ValueError, match=r"old/meta/info\.json: codebase_version v2\.1 .*convert_dataset_v21_to_v30"):
        load_replay_buffer({"path": str(tmp_path / "old"), "format": "lerobot", "obs_from_store": {"obs": ["x"]}})


def test_episode_pointing_past_its_video_names_the_file(tmp_path):
    export_lerobot(demo_buffer(lengths=(5, 6)), tmp_path / "lr", fps=20)
    episodes = tmp_path / "lr" / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(episodes)
    col = "videos/observation.images.agentview_image/from_timestamp"
    table = table.set_column(table.schema.get_field_index(col), col, [[0.0, 3.0]])  # the video ends at 0.55 s
    pq.write_table(table, episodes)
    with pytest.raises(ValueError, match=r"file-000\.mp4: no frame within 0\.0001 s of t = 3\.\d+ s"):
        load_lerobot(tmp_path / "lr", keys=["observation.images.agentview_image"])
