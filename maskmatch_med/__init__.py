"""maskmatch-med: MaskMatch semi-supervised segmentation on MONAI and PyTorch."""

__version__ = "0.1.0"
