"""The image scripts are hydra apps over configs/image/: --help lists the configs, every config composes with the
shared part, and the composed config trains and samples (the scripts' bodies, run in this process)."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from drifting_policy.image import cli
from drifting_policy.image.train import check_config

ROOT = Path(__file__).parents[1]
SCRIPTS = ("train_image.py", "train_image_encoder.py", "sample_image.py")
# fmnist_cpu shrunk to sklearn digits and the test-size DiT, without encoder or evaluation
DIGITS = ["data.kind=digits", "data.image_size=8", "model.size=N/2-test", "drift.n_gen=8", "drift.n_pos=8",
          "drift.class_queue=32", "drift.global_queue=100", "encoder.checkpoint=null", "eval.every=0",
          "train.steps=2", "train.ckpt_every=2", "train.bf16=false", "threads=1", "device=cpu"]


def composed(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(cli.CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def run_script(script: str, args: list[str], monkeypatch) -> None:
    """Run scripts/<script> as ``python scripts/<script> ARGS`` would, in this process (no second torch import)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / script), *args])
    try:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()  # hydra.main leaves its global state set


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_the_configs_and_a_missing_config_name_is_refused(script, monkeypatch, capsys):
    configs = cli.available_configs()
    assert "fmnist_cpu" in configs and "_common" not in configs
    with pytest.raises(SystemExit) as stop:
        run_script(script, ["--help"], monkeypatch)
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert "--config-name" in shown and all(f"  {name} " in shown for name in configs)
    with pytest.raises(SystemExit, match="no config given: add --config-name NAME"):
        run_script(script, ["train.steps=3"], monkeypatch)
    assert len((ROOT / "scripts" / script).read_text().splitlines()) < 100


@pytest.mark.parametrize("name", cli.available_configs())
def test_every_config_composes_with_the_shared_part(name):
    cfg = composed(name)
    check_config(cfg)
    assert cfg.sample.weights == "ema" and cfg.sample.run == cfg.out_dir and cfg.dry_run is False


def test_the_composed_config_trains_and_the_sampling_script_reads_its_ema_weights(tmp_path, monkeypatch):
    run_dir, out = tmp_path / "run", tmp_path / "samples"
    cli.train_image(composed("fmnist_cpu", DIGITS + [f"out_dir={run_dir}"]))
    assert (run_dir / "checkpoints" / "last").resolve().name == "step_00000002"
    monkeypatch.chdir(tmp_path)
    run_script("sample_image.py", ["--config-name", "fmnist_cpu", f"sample.run={run_dir}", "sample.n_per_class=3",
                                   f"sample.out={out}", "device=cpu"], monkeypatch)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == "ema" and metrics["n"] == 30 and metrics["checkpoint"].endswith("step_00000002")
    with np.load(out / "samples.npz") as z:
        assert z["arr_0"].shape == (30, 8, 8, 1) and z["arr_0"].dtype == np.uint8
        assert z["labels"].tolist() == torch.arange(10).repeat_interleave(3).tolist()
    assert Image.open(out / "grid.png").size == (3 * 10 + 2, 10 * 10 + 2)  # 3 x 10 tiles of 8 + 2 padding
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "samples"]  # hydra wrote nothing of its own
