"""bench/bag_decode.py compares equal work: its project and rosbags paths give the same arrays."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bag_decode.py"


@pytest.mark.parametrize("cameras", [(), ("head",)])
def test_bench_paths_agree(tmp_path, cameras):
    b = runpy.run_path(str(BENCH), run_name="bench_bag_decode")
    b["write_episodes"](tmp_path, 2, 5, cameras)
    bags = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(bags) == 2
    for bag in bags:
        a = b["read_project"](bag)
        b["check_same"](a, b["read_rosbags"](bag), bag)
        assert a["command"].shape == (5, 29) and len(a.get("images.head", [0] * 6)) == 6
        n = b["scan_project"](bag)
        assert n == b["scan_rosbags"](bag) == 6 + 5 + 1
        for x, y in zip(b["decode_project"](b["raw_batches"](bag)), b["decode_rosbags"](b["raw_batches"](bag))):
            b["check_same"]({"meta": x.meta, **x.fields}, {"meta": y.meta, **y.fields}, bag)
