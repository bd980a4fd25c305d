"""The Point2Mask recipe runs end to end in smoke mode and writes its report, overlay and metrics."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARMS = {"voronoi", "geodesic", "centroid", "ot", "ot_true_capacity", "watershed", "ot_partial", "centroid_drop"}


def test_point2mask_shapes_smoke(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "recipes/point2mask_shapes.py", "--config", "configs/point2mask/shapes.yaml", "--smoke", "true",
         "--out_dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert ARMS <= set(metrics["pseudo"])
    for arm in ARMS:
        row = metrics["pseudo"][arm]
        assert row["pq_th_ci_low"] <= row["pq_th"] <= row["pq_th_ci_high"]
    assert set(metrics["trained"]) == {"ot_partial", "ot", "voronoi"}
    assert metrics["network_maps_of"] == "ot_partial" and "ot_partial" in metrics["pseudo_network_maps"]
    assert set(metrics["ablation"]) == {"minus", "ci"}
    for row in metrics["trained"].values():
        assert {"pq", "pq_th", "pq_st", "miou"} <= set(row)
    assert (out / "overlay.png").stat().st_size > 0
    assert "Smoke run" in (out / "report.md").read_text()
