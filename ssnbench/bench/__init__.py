"""`ssnbench bench kernels|models`: speed benchmarks, no training.

- kernels.py: the fused shared cross-attention against PyTorch baselines at the SSN stage shapes,
  eager and device (CUDA-graph) time, with the A/B rows of the kernel knobs and issue 4's floors.
- models.py: training and inference throughput, parameters, GMACs and peak memory of a suite's
  models (timm benchmark.py's column names), the measurement itself in ssnbench.profiling.
Both record the environment (ssnbench.env) with every result; docs/benchmarks.md has the method
and the latest numbers.
"""
