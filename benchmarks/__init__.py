"""Benchmark scripts (run them as ``python benchmarks/NAME.py``) and the reference
implementations the tests compare against (``benchmarks.plain_cgcnn``, ``benchmarks.dgl_cgcnn``)."""
