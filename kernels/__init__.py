"""Triton kernels for ssnbench, imported as ssnbench.kernels."""
