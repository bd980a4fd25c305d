"""otlearn.point2mask: panoptic pseudo-masks from one point per object by optimal transport (Point2Mask).

Points supply, thing pixels consume; the cost is a geodesic distance over semantic, boundary and
embedding maps (:mod:`.cost`); supplies come from centroid-reseeded masks (:mod:`.masks`); the
segmentation module trains on pseudo-masks regenerated at every step (:mod:`.module`).
"""
from otlearn.point2mask.cost import CostWeights, GeodesicGraph, edge_weights, geodesic_distances, point_distances
from otlearn.point2mask.masks import METHODS, PseudoLabel, PseudoMaskGenerator, category_map
from otlearn.point2mask.module import PointSupervisedSegmentation
from otlearn.point2mask.network import PanopticNet, group_instances

__all__ = [
    "METHODS", "CostWeights", "GeodesicGraph", "PanopticNet", "PointSupervisedSegmentation", "PseudoLabel", "PseudoMaskGenerator",
    "category_map", "edge_weights", "geodesic_distances", "group_instances", "point_distances",
]
