"""Data readers: IDX (Fashion-MNIST layout), ImageNet folders, and the VAE latent cache."""

import gzip
import json

import numpy as np
import pytest
import torch

from drifting_policy.image import data as D
from drifting_policy.image.dry_run import make_synthetic_imagenet, tiny_vae


def write_idx(path, arr: np.ndarray):
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_parses_idx_files_and_pads_to_32(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = D.load_fashion_mnist("test", str(tmp_path))
    assert x.shape == (5, 1, 32, 32) and y.tolist() == labels.tolist()
    torch.testing.assert_close(x[:, 0, 2:30, 2:30], torch.from_numpy(images).float() / 127.5 - 1)
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, 30:] == -1).all()


def test_idx_reader_names_the_file_on_bad_input(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2, 1, 2]))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*unsigned-byte"):
        D.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="short: header says"):
        D.read_idx(short)
    with pytest.raises(FileNotFoundError, match="nothing"):
        D.load_fashion_mnist("train", str(tmp_path / "nothing"))


def test_imagenet_folder_reader_labels_sorted_wnids_and_centre_crops(tmp_path):
    make_synthetic_imagenet(tmp_path, n_classes=2, per_class=3)
    ds = D.ImageFolderDataset(str(tmp_path), size=64, flip=False)
    assert ds.wnids == ["n00000000", "n00000001"] and len(ds) == 6
    x, label = ds[4]
    assert x.shape == (3, 64, 64) and label == 1 and -1 <= x.min() and x.max() <= 1
    with pytest.raises(FileNotFoundError, match="one subfolder per class"):
        D.scan_imagenet(tmp_path / "missing")


def test_latent_cache_stores_vae_posterior_moments_atomically(tmp_path):
    torch.manual_seed(0)
    make_synthetic_imagenet(tmp_path / "inet", n_classes=2, per_class=2)
    vae = tiny_vae(tmp_path / "vae").eval()
    out = D.cache_latents(str(tmp_path / "inet"), str(tmp_path / "vae"), str(tmp_path / "cache"), size=64,
                          batch_size=3, flip=True)
    moments = np.load(out / "moments.npy")
    labels = np.load(out / "labels.npy")
    meta = json.loads((out / "meta.json").read_text())
    assert moments.shape == (8, 8, 8, 8) and moments.dtype == np.float16  # 2 x 4 images, mean|std, 64/8
    assert labels.tolist() == [0, 0, 1, 1] * 2 and meta["wnids"] == ["n00000000", "n00000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "inet", "vae"]  # no temporary folder left
    path = sorted((tmp_path / "inet" / "train" / "n00000001").iterdir())[0]
    with torch.no_grad():
        img = D.load_image(str(path), 64).unsqueeze(0)
        want = vae.encode(img).latent_dist
        want_flip = vae.encode(img.flip(-1)).latent_dist
    torch.testing.assert_close(torch.from_numpy(moments[2, :4]).float(), want.mean[0], atol=2e-3, rtol=1e-2)
    torch.testing.assert_close(torch.from_numpy(moments[6, :4]).float(), want_flip.mean[0], atol=2e-3, rtol=1e-2)
    source = D.LatentSource(str(out), seed=0)
    z, y = source.next(5)
    assert z.shape == (5, 4, 8, 8) and y.shape == (5,)
    with pytest.raises(FileExistsError, match="cache already exists"):
        D.cache_latents(str(tmp_path / "inet"), str(tmp_path / "vae"), str(out), size=64)
    (tmp_path / "inet" / "train" / "n00000001" / "broken.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="broken.JPEG"):  # a failure part-way leaves no cache, half or whole
        D.cache_latents(str(tmp_path / "inet"), str(tmp_path / "vae"), str(tmp_path / "c3"), size=64, batch_size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "inet", "vae"]
    with pytest.raises(FileNotFoundError, match="local diffusers"):
        D.cache_latents(str(tmp_path / "inet"), str(tmp_path / "no_vae"), str(tmp_path / "c2"), size=64)


def test_tensor_source_stream_resumes_exactly():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100) % 10
    a = D.TensorSource(x, y, seed=3)
    a.next(7)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    want = a.next(5)
    b = D.TensorSource(x, y, seed=99)
    b.load_state_dict(state)
    got = b.next(5)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
