"""otlearn.sela: self-labelling (Asano, Rupprecht, Vedaldi, ICLR 2020) for Lightning."""
from otlearn.sela.callback import SelfLabelCallback, SelfLabelModel
from otlearn.sela.heads import MultiHead
from otlearn.sela.module import SelfLabeling
from otlearn.sela.schedule import LabelSchedule
from otlearn.sela.smoothing import NeighbourSmoothing, knn_graph

__all__ = ["LabelSchedule", "MultiHead", "NeighbourSmoothing", "SelfLabelCallback", "SelfLabelModel", "SelfLabeling",
           "knn_graph"]
