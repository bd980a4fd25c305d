"""The solver, the methods, their callbacks and the CLI import and run without matplotlib and
scikit-image installed (recipes and plots may need them).

The check runs in a Python whose packages are this environment's minus those two (linked into a
temporary directory without them and their metadata), so a library's "is it installed?" probe sees
them absent, as on a user's machine without them.
"""
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("matplotlib", "mpl_toolkits", "skimage", "scikit_image", "lazy_loader")


def test_core_imports_without_matplotlib_and_scikit_image(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    packages = tmp_path / "site"
    packages.mkdir()
    for entry in site.iterdir():
        if entry.name.lower().startswith(ABSENT) or entry.suffix == ".pth":
            continue
        (packages / entry.name).symlink_to(entry)
    code = textwrap.dedent("""
        import importlib.util, sys
        assert importlib.util.find_spec("matplotlib") is None and importlib.util.find_spec("skimage") is None
        import torch
        import otlearn.ot, otlearn.sela, otlearn.vq, otlearn.point2mask, otlearn.eval, otlearn.data, otlearn.cli
        from otlearn.ot import sinkhorn
        from otlearn.sela import SelfLabelCallback
        from otlearn.vq import OTVectorQuantizer
        from otlearn.point2mask import PseudoMaskGenerator
        from otlearn.eval import KNNEvalCallback, ClusteringEvalCallback
        SelfLabelCallback(); KNNEvalCallback(); ClusteringEvalCallback()
        OTVectorQuantizer(8, 4).train()(torch.randn(32, 4))
        assert sinkhorn(torch.randn(20, 4), 0.1).converged
        try:  # control: the plots do need matplotlib, so this environment really lacks it
            import otlearn.eval.plots
        except ImportError:
            print("IMPORTS-OK")
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{packages}"}
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "IMPORTS-OK" in run.stdout
