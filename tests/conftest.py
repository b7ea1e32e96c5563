"""Test-wide settings. Without a GPU the Triton kernels run in the interpreter, which must be switched
on before any kernel module is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
