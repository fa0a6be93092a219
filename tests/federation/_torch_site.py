"""Test-only: small PyTorch models for the digits, imported by the sites that approve them
(``udf_modules``, and this file's digest in the dataset policy's ``trainers``)."""

from __future__ import annotations

import os

import torch

# three site processes share the machine's cores: a site uses the threads the coordinator
# gave it (DALANG_THREADS), not one per core; the test process itself is left as it is
if "DALANG_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["DALANG_THREADS"]))


def digits_mlp(hidden: int = 32) -> torch.nn.Module:
    """64 pixels -> ``hidden`` ReLU units -> 10 classes (float32, as torch makes it)."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )


def digits_batchnorm_mlp(hidden: int = 32) -> torch.nn.Module:
    """The MLP with a BatchNorm layer: its state holds running statistics and an int64 count."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.BatchNorm1d(hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )
