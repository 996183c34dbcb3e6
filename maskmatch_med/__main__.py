"""`python -m maskmatch_med ...` (what torchrun launches) is the same as `maskmatch-med ...`."""

from maskmatch_med.cli import main

main()
