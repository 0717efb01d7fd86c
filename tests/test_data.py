"""The data layer: replay buffer stores, DP's windowing and padding, dataset assembly and its errors."""

import numpy as np
import pytest
import zarr

from drifting_policy.data.dataset import PolicyDataset, parse_store_key
from drifting_policy.data.normalizer import Normalizer
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.sampler import NeighbourBatchSampler, SequenceSampler, episode_masks, nearest_other_episode

PUSHT_IMAGE_META = {"obs": {"image": {"shape": [3, 8, 8], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
                    "action": {"shape": [2]}}
PUSHT_STATE_META = {"obs": {"obs": {"shape": [20], "type": "low_dim"}}, "action": {"shape": [2]}}


def write_dp_pusht_v2(path, lengths=(20, 25)):
    """A zarr format-2 store with the public pusht_cchi_v7_replay.zarr layout (written the way zarr 2.x did: every
    chunk, also the all-zero ones, which zarr 3 skips by default)."""
    total = sum(lengths)
    with zarr.config.set({"array.write_empty_chunks": True}):
        return _write_dp_pusht_v2(path, lengths, total)


def _write_dp_pusht_v2(path, lengths, total):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = root.create_group("data")
    rng = np.random.default_rng(0)
    data.create_array("img", data=rng.uniform(0, 255, (total, 8, 8, 3)).astype(np.float32), chunks=(4, 8, 8, 3))
    data.create_array("state", data=rng.normal(size=(total, 5)).astype(np.float32), chunks=(4, 5))
    data.create_array("keypoint", data=rng.normal(size=(total, 9, 2)).astype(np.float32), chunks=(4, 9, 2))
    data.create_array("action", data=rng.normal(size=(total, 2)).astype(np.float32), chunks=(4, 2))
    data.create_array("n_contacts", data=np.zeros((total, 1), np.float32), chunks=(4, 1))
    root.create_group("meta").create_array("episode_ends", data=np.cumsum(lengths).astype(np.int64))
    return path


def test_sampler_windows_and_edge_padding_match_a_hand_computed_example():
    # one episode of 5 frames [0..4]; horizon 4, To = 2 (pad_before 1), Ta = 2 (pad_after 1)
    sampler = SequenceSampler(np.array([5]), sequence_length=4, pad_before=1, pad_after=1)
    frames = np.arange(5)
    windows = [sampler.sample(frames, i).tolist() for i in range(len(sampler))]
    assert windows == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]]
    assert sampler.sample(frames, 0, length=2).tolist() == [0, 0]


def test_sampler_never_crosses_episodes():
    sampler = SequenceSampler(np.array([3, 6]), sequence_length=3, pad_before=1, pad_after=1)
    frames = np.array([0, 0, 0, 1, 1, 1])
    assert all(len(set(sampler.sample(frames, i))) == 1 for i in range(len(sampler)))


def test_validation_split_holds_out_episodes_and_caps_training_episodes():
    train, val = episode_masks(100, 0.02, max_train_episodes=10, seed=42)
    assert val.sum() == 2 and train.sum() == 10 and not (train & val).any()


def test_replay_buffer_round_trips_zarr3(tmp_path):
    rb = ReplayBuffer()
    rb.add_episode({"a": np.ones((3, 2)), "b": np.zeros((3,))})
    rb.add_episode({"a": np.zeros((4, 2)), "b": np.ones((4,))})
    rb.save(tmp_path / "s.zarr", zarr_format=3)
    back = ReplayBuffer.load(tmp_path / "s.zarr")
    assert back.episode_ends.tolist() == [3, 7]
    np.testing.assert_array_equal(back.get_episode(1)["b"], np.ones(4))
    assert not list(tmp_path.glob("*.tmp"))


def test_public_zarr_v2_pusht_layout_loads_for_state_and_image_policies(tmp_path):
    path = write_dp_pusht_v2(tmp_path / "pusht_cchi_v7_replay.zarr")
    rb = ReplayBuffer.load(path)
    assert set(rb.data) == {"img", "state", "keypoint", "action", "n_contacts"} and rb.n_episodes == 2
    state_cfg = {"path": str(path), "obs_from_store": {"obs": ["keypoint", "state[:2]"]}, "val_ratio": 0.0}
    ds = PolicyDataset(rb, PUSHT_STATE_META, state_cfg, 2, 8, 16)
    item = ds[0]
    assert item["obs"]["obs"].shape == (2, 20) and item["action"].shape == (16, 2)
    np.testing.assert_allclose(item["obs"]["obs"][0, 18:].numpy(), rb.data["state"][0, :2])
    image_cfg = {"path": str(path), "obs_from_store": {"image": ["img"], "agent_pos": ["state[:2]"]}, "val_ratio": 0.0}
    item = PolicyDataset(rb, PUSHT_IMAGE_META, image_cfg, 2, 8, 16)[3]
    assert item["obs"]["image"].shape == (2, 3, 8, 8) and 0.0 <= item["obs"]["image"].min() <= item["obs"]["image"].max() <= 1.0


def test_missing_dataset_path_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        ReplayBuffer.load(tmp_path / "nowhere.zarr")


def test_a_folder_that_is_not_a_store_is_rejected(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("hi")
    with pytest.raises(ValueError, match="plain"):
        ReplayBuffer.load(tmp_path / "plain")


def test_obs_key_absent_from_the_store_is_named(tmp_path):
    path = write_dp_pusht_v2(tmp_path / "s.zarr")
    cfg = {"path": str(path), "obs_from_store": {"obs": ["keypoints_typo"]}}
    with pytest.raises(KeyError, match="keypoints_typo"):
        PolicyDataset(ReplayBuffer.load(path), PUSHT_STATE_META, cfg, 2, 8, 16)


def test_shape_mismatch_with_shape_meta_is_named(tmp_path):
    path = write_dp_pusht_v2(tmp_path / "s.zarr")
    cfg = {"path": str(path), "obs_from_store": {"obs": ["keypoint"]}}  # 18-D, shape_meta says 20
    with pytest.raises(ValueError, match=r"'obs'.*\(18,\).*\(20,\)"):
        PolicyDataset(ReplayBuffer.load(path), PUSHT_STATE_META, cfg, 2, 8, 16)


def test_store_key_specs_parse_slices():
    assert parse_store_key("state[:2]") == ("state", slice(None, 2))
    assert parse_store_key("object") == ("object", slice(None, None))
    with pytest.raises(ValueError):
        parse_store_key("state[:2")


def test_normalizer_maps_limits_to_unit_range_and_round_trips():
    import torch

    norm = Normalizer(PUSHT_STATE_META)
    rng = np.random.default_rng(0)
    data = {"obs": rng.uniform(-5, 7, (100, 20)), "action": np.c_[rng.uniform(0, 512, 100), np.full(100, 3.0)]}
    norm.fit(data)
    x = norm.normalize("action", torch.as_tensor(data["action"], dtype=torch.float32))
    assert x[:, 0].min() == pytest.approx(-1, abs=1e-5) and x[:, 0].max() == pytest.approx(1, abs=1e-5)
    assert torch.allclose(x[:, 1], torch.full((100,), -1.0))  # constant dimension: only shifted
    back = norm.unnormalize("action", x)
    assert torch.allclose(back, torch.as_tensor(data["action"], dtype=torch.float32), atol=1e-3)


def test_unfitted_normalizer_refuses_to_normalise():
    import torch

    with pytest.raises(RuntimeError, match="'action'"):
        Normalizer(PUSHT_STATE_META).normalize("action", torch.zeros(1, 2))


def test_store_keys_include_train_init_states():
    from drifting_policy.data.dataset import store_keys

    cfg = {"obs_from_store": {"obs": ["keypoint", "state[:2]"]}, "action_key": "action", "init_state_key": "sim_state"}
    assert store_keys(cfg) == ["action", "keypoint", "sim_state", "state"]


def test_identity_dims_are_left_as_they_are():
    import torch

    meta = {"obs": {"obs": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [4]}}
    norm = Normalizer(meta)
    action = np.random.default_rng(0).uniform(-3, 5, (50, 4))
    norm.fit({"obs": np.zeros((50, 3)), "action": action}, identity_dims={"action": [2, 3]})
    x = norm.normalize("action", torch.as_tensor(action, dtype=torch.float32))
    assert torch.allclose(x[:, 2:], torch.as_tensor(action[:, 2:], dtype=torch.float32))
    assert x[:, :2].min() == pytest.approx(-1, abs=1e-5) and x[:, :2].max() == pytest.approx(1, abs=1e-5)


def test_nearest_other_episode_skips_the_windows_own_episode():
    # episode 0: x = 0.0, 0.1, 0.2; episode 1: x = 0.15, 5.0; episode 2: x = 0.05
    feats = np.array([[0.0], [0.1], [0.2], [0.15], [5.0], [0.05]])
    episode_of = np.array([0, 0, 0, 1, 1, 2])
    nn = nearest_other_episode(feats, episode_of, 2, chunk=4)  # chunked like a large dataset
    assert nn[0].tolist() == [5, 3]  # 0.05 (ep 2), then 0.15 (ep 1); never 0.1 of its own episode
    assert nn[3].tolist() == [2, 1]  # 0.2 and 0.1, not 5.0 of its own episode
    assert nn[4].tolist() == [2, 1]
    with pytest.raises(ValueError, match="m must be"):
        nearest_other_episode(feats, episode_of, 4)  # only 3 windows lie outside episode 0


def test_neighbour_batches_hold_anchors_with_their_neighbours_and_are_seeded():
    rng = np.random.default_rng(0)
    feats, episode_of = rng.normal(size=(40, 3)), np.repeat(np.arange(8), 5)
    nn = nearest_other_episode(feats, episode_of, 3)
    batches = list(NeighbourBatchSampler(nn, batch_size=8, group=4, seed=1, epoch=0))
    assert len(batches) == 5 and all(len(b) == 8 for b in batches)
    for b in batches:
        for g in range(2):
            anchor, *rest = b[4 * g : 4 * g + 4]
            assert rest == nn[anchor].tolist()
    again = list(NeighbourBatchSampler(nn, batch_size=8, group=4, seed=1, epoch=0))
    other = list(NeighbourBatchSampler(nn, batch_size=8, group=4, seed=1, epoch=1))
    assert again == batches and other != batches
    halves = [list(NeighbourBatchSampler(nn, 8, 4, 1, 0, rank=r, world=2)) for r in (0, 1)]
    assert [h0 + h1 for h0, h1 in zip(*halves)] == batches  # each process gets whole groups
    with pytest.raises(ValueError, match="divide"):
        NeighbourBatchSampler(nn, batch_size=6, group=4, seed=1, epoch=0)
