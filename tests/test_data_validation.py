"""Damaged demonstrations fail where they are read, naming the file, the array and what was expected (issue 19):
non-finite values, bad episode_ends, missing / truncated chunks, broken zarr metadata, inconsistent robomimic demos
and files that are not HDF5. Every store here is a real file written in tmp_path."""

import json
import os

import h5py
import numpy as np
import pytest
import zarr
from conftest import make_lowdim_store

from drifting_policy.data.dataset import PolicyDataset, load_replay_buffer
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.robomimic_hdf5 import load_robomimic_replay_buffer, read_robomimic_hdf5
from drifting_policy.training.trainer import Trainer

META = {"obs": {"obs": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [2]}}


def dataset_cfg(path, obs=("obs",)):
    return {"path": str(path), "obs_from_store": {"obs": list(obs)}, "action_key": "action", "val_ratio": 0.0}


def build(path, obs=("obs",)):
    cfg = dataset_cfg(path, obs)
    return PolicyDataset(load_replay_buffer(cfg), META, cfg, n_obs_steps=2, n_action_steps=4, horizon=8)


def edit(path, name, change):
    """Rewrite array ``name`` of a saved store in place with ``change(values)`` (the way a bug or a tool would)."""
    root = zarr.open_group(str(path), mode="r+")
    values = change(root[name][:])
    del root[name]
    group, key = name.rsplit("/", 1)
    with zarr.config.set({"array.write_empty_chunks": True}):
        root[group].create_array(key, data=values, chunks=(4, *values.shape[1:]))


def chunk_file(path, name, index=1):
    array = zarr.open_group(str(path), mode="r")[name]
    return path / name / array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1))


# ------------------------------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_action_names_file_array_episode_and_index(tmp_path, bad):
    store = make_lowdim_store(tmp_path / "d.zarr")  # 6 episodes of 20 steps
    edit(store, "data/action", lambda a: np.where(np.arange(len(a))[:, None] * 2 + [0, 1] == 2 * 47 + 1, bad, a))
    with pytest.raises(ValueError) as err:
        build(store)
    msg = str(err.value)
    assert str(store) in msg and "'action'" in msg and f"holds {bad}" in msg
    assert "episode 2, step 7 of that episode (step 47 of the store), element [1]" in msg


def test_a_nan_low_dim_observation_names_the_store_key_and_the_obs_key(tmp_path):
    store = make_lowdim_store(tmp_path / "d.zarr")
    edit(store, "data/state", lambda s: np.where(np.arange(s.size).reshape(s.shape) == 4 * 3 + 2, np.nan, s))
    with pytest.raises(ValueError, match=r"array 'state' \(obs 'obs'\) holds nan at episode 0, step 3 of that "
                                         r"episode \(step 3 of the store\), element \[2\]"):
        build(store, obs=("state[:4]",))
    build(store, obs=("obs",))  # the damaged array is not used by this task: nothing to refuse


def test_an_inf_action_stops_training_before_the_normaliser_is_fitted(tiny_cfg, tmp_path, monkeypatch):
    from drifting_policy.data.normalizer import Normalizer

    cfg = tiny_cfg()
    edit(tmp_path / "demo.zarr", "data/action", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 9, np.inf, a))
    fitted = []
    original = Normalizer.fit
    monkeypatch.setattr(Normalizer, "fit", lambda self, *a, **k: fitted.append(1) or original(self, *a, **k))
    with pytest.raises(ValueError, match="'action' \\(the actions\\) holds inf at episode 0, step 4"):
        Trainer(cfg)
    assert not fitted and not (tmp_path / "drifting" / "checkpoints").exists()


def test_a_float64_action_too_large_for_float32_is_refused(tmp_path):
    store = make_lowdim_store(tmp_path / "d.zarr")
    edit(store, "data/action", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, 1e39, a.astype(np.float64)))
    with pytest.warns(RuntimeWarning, match="overflow"), pytest.raises(ValueError, match="holds inf at episode 0"):
        build(store)


# ------------------------------------------------------------------------------------------ episode_ends
@pytest.mark.parametrize("ends, expected", [
    ([20, 40, 35, 80, 100, 120], "strictly increasing .* entry 2 is 35 after 40"),
    ([20, 40, 60, 80, 100, 130], "ends at 130, but the data holds 120 steps"),
    ([20, 40, 60, 80, 100, 110], "ends at 110, but the data holds 120 steps"),
    ([0, 40, 60, 80, 100, 120], r"\[0\] is 0; the first episode must end after step 0"),
    ([20, 40, 40, 80, 100, 120], "strictly increasing"),
    ([20.5, 40, 60, 80, 100, 120], "must hold integers"),
])
def test_bad_episode_ends_name_the_file_and_the_array(tmp_path, ends, expected):
    store = make_lowdim_store(tmp_path / "d.zarr")
    edit(store, "meta/episode_ends", lambda _: np.asarray(ends))
    with pytest.raises(ValueError, match=f"d.zarr: 'meta/episode_ends'.*{expected}"):
        ReplayBuffer.load(store)


# ------------------------------------------------------------------------------------------ zarr chunks and metadata
@pytest.mark.parametrize("fmt", [2, 3])
def test_every_chunk_is_written_and_a_deleted_one_is_named(tmp_path, fmt):
    rb = ReplayBuffer()
    for _ in range(3):
        rb.add_episode({"action": np.ones((8, 2), np.float32), "zeros": np.zeros((8, 1), np.float32)})
    rb.save(tmp_path / "s.zarr", zarr_format=fmt, chunk_steps=4)
    assert chunk_file(tmp_path / "s.zarr", "data/zeros", 5).is_file()  # all-zero chunks too (zarr 3 skips them)
    np.testing.assert_array_equal(ReplayBuffer.load(tmp_path / "s.zarr").data["zeros"], 0)

    lost = chunk_file(tmp_path / "s.zarr", "data/action", 2)
    lost.unlink()
    with pytest.raises(ValueError, match=f"array 'data/action': 1 chunk file\\(s\\) missing, first chunk \\(2, 0\\) "
                                         f"\\({lost}\\); a missing chunk would read as the fill value"):
        ReplayBuffer.load(tmp_path / "s.zarr")
    ReplayBuffer.load(tmp_path / "s.zarr", keys=["zeros"])  # an array the task does not read is not checked
    filled = ReplayBuffer.load(tmp_path / "s.zarr", allow_missing_chunks=True)  # as zarr reads it, when asked
    assert filled.data["action"][8:12].sum() == 0 and filled.data["action"][:8].all()


@pytest.mark.parametrize("fmt, codec", [(2, "blosc"), (3, "zstd")])  # zarr 3's default codec for each format
def test_a_truncated_chunk_names_the_array_and_the_file(tmp_path, fmt, codec):
    store = tmp_path / "s.zarr"
    ReplayBuffer.load(make_lowdim_store(tmp_path / "d.zarr")).save(store, zarr_format=fmt, chunk_steps=16)
    array = zarr.open_group(str(store), mode="r")["data/obs"]
    assert codec in str(array.metadata.compressor if fmt == 2 else array.metadata.codecs).lower()
    target = chunk_file(store, "data/obs", 3)
    target.write_bytes(target.read_bytes()[:-7])
    # blosc decodes a truncated frame without an error (garbage values): its header sizes are checked instead
    reason = "is truncated or corrupt: .* bytes on disk, but its blosc header says" if fmt == 2 else "cannot be decoded"
    with pytest.raises(ValueError, match=f"array 'data/obs': chunk \\(3, 0\\) \\({target}\\) {reason}"):
        ReplayBuffer.load(store)


def test_an_uncompressed_truncated_chunk_is_named(tmp_path):
    store = tmp_path / "raw.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=2)
    root.create_group("data").create_array("action", data=np.ones((16, 2), np.float32), chunks=(8, 2), compressors=None)
    root.create_group("meta").create_array("episode_ends", data=np.array([16]))
    target = chunk_file(store, "data/action")
    target.write_bytes(target.read_bytes()[:-4])
    with pytest.raises(ValueError, match=f"chunk \\(1, 0\\) \\({target}\\) cannot be decoded"):
        ReplayBuffer.load(store)


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("node", ["data/obs", "data", ""])
def test_a_broken_metadata_file_names_the_node_and_the_file(tmp_path, fmt, node):
    store = tmp_path / "s.zarr"
    ReplayBuffer.load(make_lowdim_store(tmp_path / "d.zarr")).save(store, zarr_format=fmt)
    name = (".zarray" if node == "data/obs" else ".zgroup") if fmt == 2 else "zarr.json"
    meta = store / node / name
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])  # cut short, as by a crash or a full disk
    who = f"'{node}'" if node else "the store's root group"
    with pytest.raises(ValueError, match=f"{who} cannot be opened: its metadata file {meta} is broken \\(JSONDecodeError"):
        ReplayBuffer.load(store)


def test_valid_json_metadata_that_changes_the_dtype_is_caught_by_the_chunk_sizes(tmp_path):
    store = make_lowdim_store(tmp_path / "d.zarr")  # format 2, blosc: the header holds the decoded size
    meta = store / "data" / "action" / ".zarray"
    fields = json.loads(meta.read_text())
    meta.write_text(json.dumps(fields | {"dtype": "<f8"}))
    with pytest.raises(ValueError, match="array 'data/action': chunk \\(0, 0\\) .* decodes to 960 bytes, but a "
                                         "\\(120, 2\\) float64 chunk has 1920"):
        ReplayBuffer.load(store)


# ------------------------------------------------------------------------------------------ robomimic HDF5
def robomimic_file(path, lengths=(12, 9), actions=None):
    """A minimal file in robomimic's layout: data/demo_i/{actions, states, obs/object}, env_args on data."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {}})
        for i, n in enumerate(lengths):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = n
            demo.create_dataset("actions", data=rng.normal(size=(n if actions is None else actions[i], 7)))
            demo.create_dataset("states", data=rng.normal(size=(n, 10)))
            demo.create_dataset("obs/object", data=rng.normal(size=(n, 3)))
    return path


def test_a_consistent_robomimic_file_reads(tmp_path):
    buffer = read_robomimic_hdf5(robomimic_file(tmp_path / "ok.hdf5"), ["object"])
    assert buffer.episode_ends.tolist() == [12, 21] and buffer.data["action"].shape == (21, 7)


def test_robomimic_actions_shorter_than_states_name_the_demo_and_the_lengths(tmp_path):
    path = robomimic_file(tmp_path / "short.hdf5", actions=(12, 8))
    expected = (f"{path}: data/demo_1: its arrays must have one entry per step, the same non-zero number; got lengths "
                "{'actions': 8, 'states': 9, 'obs/object': 9, 'num_samples attribute': 9}")
    with pytest.raises(ValueError) as err:
        read_robomimic_hdf5(path, ["object"])
    assert str(err.value) == expected
    with pytest.raises(ValueError, match="data/demo_1: its arrays must have one entry per step"):
        load_robomimic_replay_buffer(path, ["object"], abs_action=False, use_cache=False)


class RecordingConverter:
    """Stands in for the simulator-side delta -> absolute conversion: records what reaches it."""

    env_name, state_dim = "Lift", 10

    def __init__(self):
        self.calls = 0

    def __call__(self, states, actions):
        self.calls += 1
        return actions


def test_a_nan_in_robomimic_actions_names_the_demo_before_any_conversion(tmp_path):
    path = robomimic_file(tmp_path / "nan.hdf5")
    with h5py.File(path, "r+") as f:
        f["data/demo_0/actions"][4, 6] = np.nan
    converter = RecordingConverter()
    with pytest.raises(ValueError, match=r"nan.hdf5: data/demo_0: array 'actions' holds nan at step 4, element \[6\]"):
        read_robomimic_hdf5(path, ["object"], converter=converter)
    assert converter.calls == 0


@pytest.mark.parametrize("abs_action", [True, False])
def test_a_random_bytes_hdf5_names_the_file(tmp_path, abs_action):
    path = tmp_path / "noise.hdf5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=f"{path} is not a readable HDF5 file"):
        load_robomimic_replay_buffer(path, ["object"], abs_action=abs_action)
    with pytest.raises(ValueError, match=f"{path} is not a readable HDF5 file"):
        read_robomimic_hdf5(path, ["object"])


def test_a_truncated_hdf5_names_the_file(tmp_path):
    path = robomimic_file(tmp_path / "cut.hdf5", lengths=(400, 400))
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(ValueError, match=f"{path}"):
        read_robomimic_hdf5(path, ["object"])
