"""The photos scenario: VOC / Cityscapes RGB images (scenario.py; data, validation, inference)."""
