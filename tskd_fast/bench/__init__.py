"""Benchmarks of the fused ops and of whole training steps (``tskd-fast bench``).

Modules: ``cases`` (one file per op family: shapes, inputs, baselines, minimal-bytes model),
``timing`` (warm-up, alternating rounds, percentiles, compile workers held back), ``bandwidth``
(copy bandwidth in the same run), ``memory`` (peak memory on the CPU and CUDA), ``runner`` (one op
case), ``steps`` (whole training steps), ``report`` (table, CSV, JSON, chart), ``cli``.
"""
