"""The conditional-multimodality toy (issue 9): neighbour positives and the metrics, on hand-made inputs."""

import math

import pytest
import torch

from drifting_policy import toys


def test_knn_positive_indices_picks_nearest_observations_self_first():
    obs = torch.tensor([[0.0], [0.1], [0.35], [1.0], [0.9]])
    idx = toys.knn_positive_indices(obs, 3)
    assert idx.shape == (5, 3)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4]  # itself first
    assert idx[0].tolist() == [0, 1, 2]
    assert idx[2].tolist() == [2, 1, 0]
    assert idx[3].tolist() == [3, 4, 2]


def test_knn_uses_euclidean_distance_over_all_features_and_keeps_self_first_on_duplicates():
    obs = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    idx = toys.knn_positive_indices(obs, 3)
    assert idx[0].tolist() == [0, 1, 3]
    assert idx[1].tolist() == [1, 0, 3]
    assert idx[2].tolist() == [2, 0, 1]


def test_knn_k_equal_one_is_the_per_observation_recipe_and_bad_k_raises():
    obs = torch.randn(6, 3)
    assert toys.knn_positive_indices(obs, 1)[:, 0].tolist() == list(range(6))
    with pytest.raises(ValueError, match="k must be"):
        toys.knn_positive_indices(obs, 7)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        toys.knn_positive_indices(torch.randn(6), 2)


@pytest.mark.parametrize("task", toys.TASKS)
def test_true_samples_score_as_perfect(task):
    gen = torch.Generator().manual_seed(0)
    o = torch.linspace(0, 1, 50)
    samples = torch.stack([toys.sample_actions(task, o, gen) for _ in range(64)], dim=1)
    m = toys.multimodal_metrics(task, o, samples, gen)
    assert m["hit"] > 0.97 and m["between"] < 0.03
    assert m["mode_tv"] < 0.15  # sampling noise of 64 draws per observation
    assert abs(m["energy"]) < 0.01


def test_the_conditional_mean_scores_as_averaging():
    o = torch.linspace(0, 1, 50)
    mean = (toys.mode_probs("balanced2", o)[..., None] * toys.mode_centres("balanced2", o)).sum(1)
    m = toys.multimodal_metrics("balanced2", o, mean[:, None].expand(-1, 64, -1), torch.Generator().manual_seed(0))
    assert m["hit"] == 0.0 and m["between"] == 1.0
    assert m["energy"] > 0.3


def test_one_mode_only_scores_half_total_variation_on_the_balanced_task():
    o = torch.linspace(0, 1, 50)
    one = toys.mode_centres("balanced2", o)[:, :1].expand(-1, 64, -1)
    m = toys.multimodal_metrics("balanced2", o, one, torch.Generator().manual_seed(0))
    assert m["hit"] == 1.0 and m["between"] == 0.0
    assert m["mode_tv"] == pytest.approx(0.5)


def test_mode_probabilities_follow_the_observation():
    o = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(toys.mode_probs("prop2", o), torch.tensor([[0.0, 1.0], [0.25, 0.75], [1.0, 0.0]]))
    assert toys.mode_centres("three", o).shape == (3, 3, 2)
    radii = toys.mode_centres("three", o).norm(dim=-1)
    torch.testing.assert_close(radii, torch.full((3, 3), toys.MODE_RADIUS))
    # The centres turn by pi/2 as o goes from 0 to 1.
    c = toys.mode_centres("balanced2", torch.tensor([0.0, 1.0]))[:, 0]
    angle = torch.atan2(c[:, 1], c[:, 0])
    assert float(angle[1] - angle[0]) == pytest.approx(math.pi / 2, abs=1e-5)


def test_points_outside_the_hull_are_neither_hit_nor_between():
    o = torch.tensor([0.5])
    far = torch.tensor([[[0.9, 0.0], [-0.9, 0.0]]])  # beside the vertical segment between the two modes
    m = toys.multimodal_metrics("balanced2", o, far, torch.Generator().manual_seed(0))
    assert m["hit"] == 0.0 and m["between"] == 0.0
    inside = torch.tensor([[[0.0, 0.0], [0.05, 0.1]]])  # inside the three-mode triangle
    m3 = toys.multimodal_metrics("three", o, inside, torch.Generator().manual_seed(0))
    assert m3["hit"] == 0.0 and m3["between"] == 1.0
