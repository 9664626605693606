"""The short fuzz run of the suite: every entry point that takes a user's bytes, on the committed seed corpus and
deterministic mutations of it, refuses bad bytes only with a clear message; every crash the long run
(fuzz/run.py, atheris) found stays fixed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fuzz import targets

MUTATIONS = 60
CRASHES = Path(targets.__file__).resolve().parent / "crashes"


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seed_corpus_and_mutations_give_only_clean_refusals(name):
    fn = targets.TARGETS[name]
    seeds = targets.seeds(name)
    assert seeds, f"no seeds for {name}"
    rng = np.random.default_rng(20261207)
    for seed in seeds:
        fn(seed)
        for _ in range(MUTATIONS // len(seeds) + 1):
            fn(targets.mutate(seed, rng))


@pytest.mark.parametrize("path", sorted(p for p in CRASHES.glob("*/*") if p.is_file()) or [None],
                         ids=lambda p: "none-found" if p is None else f"{p.parent.name}/{p.name}")
def test_crashes_found_by_the_long_run_stay_fixed(path):
    if path is None:
        pytest.skip("the long runs found no crash to keep")
    targets.TARGETS[path.parent.name](path.read_bytes())
