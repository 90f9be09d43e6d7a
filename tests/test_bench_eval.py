"""`python -m steerjax.bench eval --small`: the figures are computed and consistent (not timed)."""

import json

import numpy as np

from steerjax.bench import __main__ as bench_main
from steerjax.bench import eval as bench_eval


def test_small_eval_benchmark_reports_every_figure(capsys):
  assert "eval" in bench_main.available()
  bench_eval.main(["--small", "--json"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  stream, memory, tta = out["stream"], out["memory"], out["tta"]
  assert [r["examples"] for r in stream] == [128, 512]
  for r in stream:
    # Streaming keeps the features (float32) and the labels (int32), nothing per pixel.
    assert r["kept_bytes"] == r["examples"] * (4 * r["feature_dim"] + 4)
    assert r["rss_peak_bytes"] >= r["rss_base_bytes"] > 0
    assert r["examples_per_s"] == r["examples"] / r["seconds"] > 0
  assert memory["extra_kept_bytes"] == stream[1]["kept_bytes"] - stream[0]["kept_bytes"]
  assert memory["ratio"] == (stream[1]["rss_peak_bytes"] - stream[0]["rss_peak_bytes"]) / \
      memory["extra_kept_bytes"]
  assert [r["num_views"] for r in tta] == [2]
  for r in tta:
    assert np.isfinite(r["speedup"]) and r["image_s_per_image"] > 0 and r["steered_s_per_image"] > 0
    assert r["speedup"] == r["image_s_per_image"] / r["steered_s_per_image"]
