"""Training infrastructure: process groups, checkpoints, EMA, logging and the run configuration."""
