"""vssbench: a comparative benchmark suite for efficient video semantic segmentation."""

__version__ = "0.1.0"
