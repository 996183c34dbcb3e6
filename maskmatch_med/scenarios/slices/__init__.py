"""The slices scenario: a 2D network on every slice of 3D volumes (scenario.py; data, validation, inference)."""
