"""benchmarks/engine_overhead.py compares every trainer with a bare PyTorch loop written from its ``_iteration``; the
comparison means something only while the two compute the same steps. This runs each engine and its bare loop for
two iterations from one state and asserts the same parameters, so that a change to an engine fails here until the
bare loop follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import engine_overhead as overhead

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("case", overhead.CASES, ids=lambda c: f"{c.trainer}-{c.variant or 'as configured'}")
def test_bare_loop_computes_what_the_engine_computes(case):
    torch.set_num_threads(1)
    batches = case.batches(2, torch.Generator().manual_seed(0))
    bench = overhead.Bench(case, 2)
    bench.reset()
    initial = bench.parameters()
    bench.run_engine(batches)
    engine = bench.parameters()
    bench.run_bare(batches)
    bare = bench.parameters()
    assert len(engine) == len(bare) == len(initial)
    assert any(not torch.equal(a, b) for a, b in zip(engine, initial))  # the two iterations did train
    assert max(float((a - b).abs().max()) for a, b in zip(engine, bare)) == 0.0
