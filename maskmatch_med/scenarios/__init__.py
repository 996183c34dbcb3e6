"""One wing per kind of sample: slices/ (2D slices of volumes), volumes/ (3D patches of volumes) and
photos/ (VOC / Cityscapes images). Each provides the interface of base.Scenario in its scenario.py;
registry.py lists them and picks the one a recipe or checkpoint belongs to. What the two NIfTI wings
share is in medical.py, what every predict shares in prediction.py."""
