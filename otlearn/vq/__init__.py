"""otlearn.vq: OptVQ-style optimal-transport vector quantization."""
from otlearn.vq.autoencoder import VQAutoencoder, psnr
from otlearn.vq.monitor import CodebookMonitor, usage_stats
from otlearn.vq.quantizer import OTVectorQuantizer, QuantizerOutput

__all__ = ["CodebookMonitor", "OTVectorQuantizer", "QuantizerOutput", "VQAutoencoder", "psnr", "usage_stats"]
