"""otlearn.sela: self-labelling (Asano, Rupprecht, Vedaldi, ICLR 2020) for Lightning."""
from otlearn.sela.callback import SelfLabelCallback, SelfLabelModel
from otlearn.sela.heads import MultiHead
from otlearn.sela.module import SelfLabeling
from otlearn.sela.restarts import RESTART_SEED_STRIDE, RestartSelection, best_of_restarts, restart_seeds, self_label_loss
from otlearn.sela.schedule import LabelSchedule
from otlearn.sela.smoothing import NeighbourSmoothing, knn_graph

__all__ = ["RESTART_SEED_STRIDE", "LabelSchedule", "MultiHead", "NeighbourSmoothing", "RestartSelection", "SelfLabelCallback",
           "SelfLabelModel", "SelfLabeling", "best_of_restarts", "knn_graph", "restart_seeds", "self_label_loss"]
