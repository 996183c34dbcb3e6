"""The volumes scenario: a 3D network on patches of resampled volumes (scenario.py; grid, data, validation, inference)."""
