"""otlearn.eval: evaluation of learned representations (kNN, linear probe, clustering metrics)."""
from otlearn.eval.callbacks import ClusteringEvalCallback, KNNEvalCallback
from otlearn.eval.clustering import ari, cluster_accuracy, clustering_metrics, nmi
from otlearn.eval.features import EmbeddingModel, collect, extract
from otlearn.eval.knn import knn_accuracy, knn_predict
from otlearn.eval.panoptic import PanopticQuality, bootstrap_pq, mean_iou, panoptic_quality
from otlearn.eval.linear import LinearProbeResult, linear_probe
from otlearn.eval.representation import evaluate_representation

__all__ = [
    "ClusteringEvalCallback", "PanopticQuality", "bootstrap_pq", "mean_iou", "panoptic_quality", "KNNEvalCallback", "LinearProbeResult", "ari", "cluster_accuracy",
    "EmbeddingModel", "clustering_metrics", "collect", "evaluate_representation", "extract", "knn_accuracy", "knn_predict", "linear_probe", "nmi",
]
