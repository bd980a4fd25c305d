"""otlearn.sela: self-labelling (Asano, Rupprecht, Vedaldi, ICLR 2020) for Lightning."""
from otlearn.sela.callback import SelfLabelCallback, SelfLabelModel
from otlearn.sela.heads import MultiHead
from otlearn.sela.module import SelfLabeling
from otlearn.sela.schedule import LabelSchedule

__all__ = ["LabelSchedule", "MultiHead", "SelfLabelCallback", "SelfLabelModel", "SelfLabeling"]
