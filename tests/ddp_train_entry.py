"""Entry point for the torchrun test: trains the tiny synthetic config given as a YAML path (argv[1])."""

import sys

import torch
from omegaconf import OmegaConf

from drifting_policy.training.trainer import Trainer

if __name__ == "__main__":
    torch.set_num_threads(1)
    Trainer(OmegaConf.load(sys.argv[1])).run()
