"""The benchmark's code paths on tiny inputs (no timings asserted: speed is reported by `leukoview bench`), and
the property it rests on: every fast path gives the plain path's results."""
from __future__ import annotations

import numpy as np

from bench import benchmark
from tests.conftest import make_class_folders


def test_fast_scoring_gives_the_naive_loops_scores(tiny_bundle, tmp_path):
    from leukoview.primitives.images import find_images

    make_class_folders(tmp_path / "imgs", {"normal": 0, "blast": 3}, 5, seed=21, suffix=".jpg")
    paths = find_images(tmp_path / "imgs")
    for backend in ("torch", "auto"):
        row, info = benchmark.bench_scoring(tiny_bundle, paths, backend=backend)
        assert info["max_abs_difference"] < 1e-4, backend
        assert row.fast > 0 and row.naive > 0 and row.unit == "images/s"


def test_network_only_row(tiny_bundle):
    from tests.conftest import cell_image

    row = benchmark.bench_network_only(tiny_bundle, [cell_image(k % 4, np.random.default_rng(k)) for k in range(6)],
                                       rounds=1)
    assert row.fast > 0 and row.naive > 0 and row.unit == "images/s" and "ceiling" in row.note


def test_single_image_and_threshold_rows(tiny_bundle):
    from tests.conftest import cell_image

    rows = benchmark.bench_single_image(tiny_bundle, cell_image(2, np.random.default_rng(0)), runs=2)
    assert rows[0].fast > 0 and rows[0].naive > 0 and rows[0].ratio == rows[0].naive / rows[0].fast
    rows += benchmark.bench_threshold(5_000, moves=5)
    table = benchmark.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "threshold move" in table


def test_ratio_direction_follows_the_unit():
    assert benchmark.Row("x", 100, 25, "images/s").ratio == 4
    assert benchmark.Row("x", 20, 100, "ms").ratio == 5
    assert np.isnan(benchmark.Row("x", 20, float("nan"), "ms").ratio)


def test_the_reviewers_bench_counts_lost_and_duplicated_decisions_apart():
    """One decision confirmed and never stored, another stored twice: equal totals, but one lost and one duplicated."""
    from bench.reviewers import confirmed, tally

    assert confirmed("Saved: MYO_0028.jpg → myeloblast\n") == ("MYO_0028.jpg", "myeloblast")
    out = {"A": {"saved": [("a.png", "blast"), ("b.png", "normal")]}, "B": {"saved": [("a.png", "second review")]}}
    rows = [{"reviewer": "A", "file": "a.png", "label": "blast", "action": "confirm"},
            {"reviewer": "A", "file": "a.png", "label": "blast", "action": "confirm"},
            {"reviewer": "B", "file": "a.png", "label": "blast", "action": "second_review"}]
    assert tally(out, rows) == {"confirmed": 3, "rows": 3, "lost": 1, "duplicated": 1}
    assert tally(out, rows[1:] + [{"reviewer": "A", "file": "b.png", "label": "normal", "action": "override"}]) == \
        {"confirmed": 3, "rows": 3, "lost": 0, "duplicated": 0}
