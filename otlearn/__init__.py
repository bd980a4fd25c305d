"""otlearn: optimal-transport self-supervision for PyTorch Lightning."""
__version__ = "0.1.0"
