"""When label rounds run: SeLa's quadratic spacing, every n epochs, or explicit epochs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class LabelSchedule:
    """Epochs (0-based, at the start of the epoch) at which a label round runs.

    * ``quadratic``: ``rounds`` rounds at ``round(max_epochs * (j / rounds)^2)``, j = 0..rounds-1:
      dense early, sparse late (SeLa's ImageNet schedule); duplicates collapse.
    * ``every``: every ``every`` epochs starting at ``start``.
    * ``epochs``: exactly the listed epochs.
    """

    kind: Literal["quadratic", "every", "epochs"] = "every"
    rounds: int = 10
    every: int = 1
    start: int = 0
    epochs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("quadratic", "every", "epochs"):
            raise ValueError(f"schedule kind must be 'quadratic', 'every' or 'epochs', got {self.kind!r}")
        if self.kind == "quadratic" and self.rounds < 1:
            raise ValueError(f"quadratic schedule needs rounds >= 1, got {self.rounds}")
        if self.kind == "every" and self.every < 1:
            raise ValueError(f"'every' schedule needs every >= 1, got {self.every}")
        if self.kind == "epochs" and any(e < 0 for e in self.epochs):
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    def label_epochs(self, max_epochs: int) -> list[int]:
        if self.kind == "quadratic":
            epochs = {round(max_epochs * j * j / self.rounds**2) for j in range(self.rounds)}
        elif self.kind == "every":
            epochs = set(range(self.start, max_epochs, self.every))
        else:
            epochs = set(self.epochs)
        return sorted(e for e in epochs if e < max_epochs)
