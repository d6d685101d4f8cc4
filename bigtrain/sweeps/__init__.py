"""Sweeps (many runs of one recipe with different values) and the runs they leave behind."""
