"""otlearn.vq: OptVQ-style optimal-transport vector quantization."""
from otlearn.vq.autoencoder import VQAutoencoder, psnr
from otlearn.vq.monitor import CodebookMonitor, usage_stats
from otlearn.vq.quantizer import OPTVQ_SETTINGS, OTVectorQuantizer, QuantizerOutput

__all__ = ["CodebookMonitor", "OPTVQ_SETTINGS", "OTVectorQuantizer", "QuantizerOutput", "VQAutoencoder", "psnr", "usage_stats"]
