"""otlearn.vq: OptVQ-style optimal-transport vector quantization."""
from otlearn.vq.autoencoder import VQAutoencoder, psnr
from otlearn.vq.monitor import CodebookMonitor, usage_stats
from otlearn.vq.quantizer import OPTVQ_SETTINGS, OTVectorQuantizer, QuantizerOutput
from otlearn.vq.schedule import CodeMarginalSchedule, run_training_steps

__all__ = ["CodeMarginalSchedule", "CodebookMonitor", "OPTVQ_SETTINGS", "OTVectorQuantizer", "QuantizerOutput", "VQAutoencoder", "psnr", "run_training_steps", "usage_stats"]
