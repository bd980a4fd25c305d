"""otlearn.testing: independent references the tests and benchmarks hold otlearn against.

Not part of the solver: :mod:`otlearn.testing.anchors` re-implements the published solvers of SwAV
and SeLa as their papers' code runs them (NumPy / plain torch), so that the fixed-iteration mode
can be shown to reproduce them.
"""
from otlearn.testing.anchors import sela_sinkhorn_knopp, swav_sinkhorn

__all__ = ["sela_sinkhorn_knopp", "swav_sinkhorn"]
