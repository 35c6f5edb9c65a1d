"""Side-by-side benchmarks of w2v and the reference implementations.

Run from the repository root as modules, e.g. ``python -m bench.bench_speed``;
the figures they print are kept in ``bench/RESULTS.md``.
"""
