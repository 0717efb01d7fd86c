"""The benchmark's protocol (DP's max / last-k mean over checkpoints, mean/std over seeds, p-metrics), run files,
report and orchestration, on hand-made run files with hand-computed values, plus one tiny real benchmark run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drifting_policy.benchmark import protocol
from drifting_policy.benchmark import runner as benchmark
from drifting_policy.benchmark.report import build_report

REPO = Path(__file__).resolve().parents[1]

# Two training seeds, five evaluation checkpoints each (given out of order, with training-only records between).
SEED1 = [  # p1 absent at epoch 20 (summarize omits p_n nobody reached) -> 0 there; p2 only at epoch 40
    {"epoch": 30, "test/mean_score": 0.4, "test/success_rate": 0.25, "test/p1": 1.0},
    {"epoch": 10, "test/mean_score": 0.2, "test/success_rate": 0.0, "test/p1": 0.5},
    {"epoch": 15, "train_loss": 0.3},
    {"epoch": 20, "test/mean_score": 0.6, "test/success_rate": 0.5},
    {"epoch": 40, "test/mean_score": 0.8, "test/success_rate": 0.75, "test/p1": 1.0, "test/p2": 0.5},
    {"epoch": 50, "test/mean_score": 0.5, "test/success_rate": 0.5, "test/p1": 0.5, "test/mean_length": 7.0},
]
SEED2 = [{"epoch": 10 * (i + 1), "test/mean_score": s, "test/success_rate": s / 2, "test/p1": p}
         for i, (s, p) in enumerate(zip([0.1, 0.3, 0.9, 0.7, 0.2], [0.2, 0.4, 0.6, 0.8, 1.0]))]


def make_run(seed, records, variant="drifting", task="t1", **extra):
    policy = "drifting" if variant == "drifting" else "diffusion"
    return {"task": task, "policy": policy, "variant": variant, "seed": seed, "scale": "cpu", "overrides": [],
            "command": f"python scripts/train_policy.py task={task} policy={policy} seed={seed}",
            "train_wall_s": 120.0 * seed, "train_compute_s": 60.0 * seed, "num_epochs": 50,
            "records": records} | extra


def test_run_summary_is_max_and_mean_of_last_k_checkpoints_in_epoch_order():
    s = protocol.run_summary(SEED1, k=3)
    assert s["test/mean_score"] == {"max": 0.8, "last_k_mean": pytest.approx((0.4 + 0.8 + 0.5) / 3),
                                    "n_checkpoints": 5, "k": 3}
    assert s["test/success_rate"]["last_k_mean"] == pytest.approx((0.25 + 0.75 + 0.5) / 3)
    assert s["test/p1"]["max"] == 1.0 and s["test/p1"]["last_k_mean"] == pytest.approx(2.5 / 3)
    assert s["test/p2"]["max"] == 0.5 and s["test/p2"]["last_k_mean"] == pytest.approx(0.5 / 3)
    assert "test/mean_length" not in s  # only score, success and p-metrics follow the protocol


def test_last_k_mean_uses_all_checkpoints_when_fewer_than_k():
    s = protocol.run_summary(SEED2, k=10)["test/mean_score"]
    assert s["k"] == 5 and s["last_k_mean"] == pytest.approx(2.2 / 5) and s["max"] == 0.9


def test_seed_aggregation_mean_and_sample_std_with_missing_p_metric_as_zero():
    agg = protocol.aggregate_seeds([protocol.run_summary(SEED1, 3), protocol.run_summary(SEED2, 3)])
    score = agg["test/mean_score"]
    assert score["max"]["mean"] == pytest.approx(0.85) and score["max"]["std"] == pytest.approx(0.1 / math.sqrt(2))
    last1, last2 = 1.7 / 3, 1.8 / 3
    assert score["last_k_mean"]["mean"] == pytest.approx((last1 + last2) / 2)
    assert score["last_k_mean"]["std"] == pytest.approx(abs(last2 - last1) / math.sqrt(2))
    assert score["max"]["n"] == 2 and score["max"]["values"] == [0.8, 0.9]
    assert agg["test/p1"]["last_k_mean"]["mean"] == pytest.approx((2.5 / 3 + 0.8) / 2)
    assert agg["test/p2"]["max"]["values"] == [0.5, 0.0]  # seed 2 never completed two stages
    assert agg["test/p2"]["max"]["std"] == pytest.approx(0.5 / math.sqrt(2))


def test_one_seed_has_no_std_and_missing_non_p_metric_is_an_error():
    assert protocol.seed_statistics([0.3])["std"] is None
    broken = [{"epoch": 1, "test/mean_score": 0.1, "test/success_rate": 0.0}, {"epoch": 2, "test/mean_score": 0.2}]
    with pytest.raises(KeyError, match="epoch 2 lacks 'test/success_rate'"):
        protocol.run_summary(broken)
    with pytest.raises(ValueError, match="no evaluation records"):
        protocol.run_summary([{"epoch": 1, "train_loss": 0.1}])


def test_suite_groups_runs_by_task_variant_setting(tmp_path):
    runs = [make_run(1, SEED1), make_run(2, SEED2), make_run(1, SEED2, "ddpm100"),
            make_run(1, SEED2, overrides=["training.num_epochs=5"])]
    groups = protocol.aggregate_suite(runs, k=3)
    assert [(g["variant"], g["seeds"], g["overrides"]) for g in groups] == [
        ("ddpm100", [1], []), ("drifting", [1, 2], []), ("drifting", [1], ["training.num_epochs=5"])]
    assert groups[1]["train_compute_s"]["mean"] == 90.0 and groups[1]["curve"]["epoch"][0] == [10, 20, 30, 40, 50]
    with pytest.raises(ValueError, match="seeds \\[1, 1\\] repeat"):
        protocol.aggregate_suite([make_run(1, SEED1), make_run(1, SEED2)])


def test_run_writer_is_atomic_and_loader_names_bad_files(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "t1__cpu__drifting__seed1.json"
    protocol.write_run(path, make_run(1, SEED1))
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("drifting_policy.utils.io.os.replace", crash)
    with pytest.raises(OSError):
        protocol.write_run(path, make_run(1, SEED2))
    monkeypatch.undo()
    assert path.read_text() == before  # the old file survives a crash; the temp file is not a *.json run
    assert [r["seed"] for r in protocol.load_runs(path.parent)] == [1]
    with pytest.raises(KeyError, match="lacks"):
        protocol.write_run(tmp_path / "x.json", {"task": "t1"})
    (path.parent / "bad.json").write_text(json.dumps({"task": "t1", "records": []}))
    with pytest.raises(KeyError, match="bad.json lacks key"):
        protocol.load_runs(path.parent)


def test_existing_run_files_are_skipped_without_training(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    calls = []
    monkeypatch.setattr(benchmark, "train", lambda cmd, folder, threads: calls.append(cmd) or 1 / 0)
    protocol.write_run(benchmark.run_file(out, "t1", "cpu", "drifting", 1, []), make_run(1, SEED1))
    assert benchmark.benchmark_one("t1", "drifting", 1, "cpu", out, tmp_path / "o", []) == []
    protocol.write_run(benchmark.run_file(out, "t1", "cpu", "ddpm100", 1, []), make_run(1, SEED1, "ddpm100"))
    with pytest.raises(ZeroDivisionError):  # DDIM-10 missing: the diffusion run is (re)started
        benchmark.benchmark_one("t1", "diffusion", 1, "cpu", out, tmp_path / "o", [])
    assert "policy=diffusion" in calls[0] and benchmark.KEEP_ALL in calls[0]
    protocol.write_run(benchmark.run_file(out, "t1", "cpu", "ddim10", 1, []), make_run(1, SEED1, "ddim10"))
    assert benchmark.benchmark_one("t1", "diffusion", 1, "cpu", out, tmp_path / "o", []) == []
    assert len(calls) == 1


def test_report_builds_table_plots_results_and_fairness(tmp_path):
    runs = tmp_path / "runs"
    fp = {"backbone": {"down_dims": [64, 128]}, "training": {"num_epochs": 50}}
    for seed, records in ((1, SEED1), (2, SEED2)):
        protocol.write_run(runs / f"d{seed}.json", make_run(seed, records, fingerprint=fp))
        protocol.write_run(runs / f"p{seed}.json", make_run(seed, SEED2, "ddpm100", fingerprint=fp))
    bad = fp | {"backbone": {"down_dims": [32, 64]}}
    protocol.write_run(runs / "i1.json", make_run(1, SEED1, "ddim10", fingerprint=bad))
    # seed 2's diffusion run trained 3x as long as its drifting run: flagged even with identical fingerprints
    protocol.write_run(runs / "p2.json", make_run(2, SEED2, "ddpm100", fingerprint=fp, train_compute_s=360.0))
    out = tmp_path / "report"
    out.mkdir()
    (out / "latency.json").write_text(json.dumps({"meta": {"device": "cpu", "torch_threads": 1}, "rows": [
        {"task": "t1", "scale": "cpu", "policy": p, "predict_action_ms": ms, "encode_ms": 0.1, "generate_ms": ms - 0.1,
         "backbone_forward_ms": 1.0, "nfe": n, "params_backbone_M": 4.0}
        for p, ms, n in (("drifting", 1.3, 1), ("ddim-10", 10.5, 10), ("ddpm-100", 100.0, 100))]}))
    results = build_report(runs, out, k=3)
    text = (out / "README.md").read_text()
    assert "| t1 | cpu | drifting | 0.850 ± 0.071 | 0.583 ± 0.024 | 0.60 ± 0.21 |" in text
    assert "| 1, 2 | 50 (5 evals) | 1.5 min | 3.0 min | 1.3 ms |" in text  # compute 60/120 s, wall 120/240 s, drifting latency
    assert "| t1 | cpu | ddpm100 | 0.900 ± 0.000 |" in text and "100.0 ms" in text and "| t1 | cpu | ddim10 | 0.800 |" in text
    assert "t1 (cpu, seed 2): training compute differs by more than 1.5x (diffusion 6.0 min, drifting 2.0 min)" in text
    assert "seed 1): training compute" not in text
    assert "'backbone' differs between" in text and "python scripts/train_policy.py task=t1 policy=diffusion seed=2" in text
    for png in ("score_t1.png", "latency.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "results.json").read_text())
    assert [g["variant"] for g in saved["groups"]] == ["drifting", "ddim10", "ddpm100"] == \
        [g["variant"] for g in results["groups"]]
    assert saved["groups"][0]["metrics"]["test/p1"]["max"]["mean"] == 1.0


def test_tiny_benchmark_end_to_end(tmp_path):
    """Diffusion and BC on TwoPaths, 1 epoch, 2 test episodes: trained by the real command, DDPM-100, DDIM-10 and BC
    run files, the report; a second sitting skips them."""
    overrides = [f"task.dataset.path={tmp_path}/demo.zarr", "task.dataset.generate.n=4",
                 f"task.dataset.generate.path={tmp_path}/demo.zarr", "training.num_epochs=1", "task.eval.n_test=2",
                 "task.eval.n_train=0", "task.eval.n_videos=0", "policy.down_dims=[16,32]", "training.batch_size=256",
                 "task.env.max_steps=24"]
    args = [sys.executable, "scripts/benchmark.py", "tasks=[two_paths]", "policies=[diffusion,bc]", "seeds=[3]",
            "scale=paper", f"out={tmp_path}/runs", f"run_root={tmp_path}/outputs", f"report={tmp_path}/report",
            "train_overrides=[" + ",".join(f"'{o}'" for o in overrides) + "]"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    first = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = {r["variant"]: r for r in protocol.load_runs(tmp_path / "runs")}
    assert set(runs) == {"ddpm100", "ddim10", "bc"}
    assert runs["bc"]["command"].startswith("python scripts/train_policy.py task=two_paths policy=bc")
    assert runs["ddim10"]["records"][0]["epoch"] == runs["ddpm100"]["records"][0]["epoch"] == 1
    assert runs["ddim10"]["records"][0]["test/n_episodes"] == 2 and "sampler=ddim" in runs["ddim10"]["eval_command"]
    assert runs["ddpm100"]["command"].startswith("python scripts/train_policy.py task=two_paths policy=diffusion")
    report = (tmp_path / "report" / "README.md").read_text()
    assert "| two_paths | paper +" in report and "| bc |" in report
    # a second sitting finds both run files and trains nothing
    assert benchmark.benchmark_one("two_paths", "diffusion", 3, "paper", tmp_path / "runs", tmp_path / "outputs",
                                   overrides) == []
