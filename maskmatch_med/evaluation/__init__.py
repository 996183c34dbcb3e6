"""Scoring predictions against ground truth, apart from training: metrics, the evaluate and compare
commands, and the optional clean-up of predicted label maps."""
