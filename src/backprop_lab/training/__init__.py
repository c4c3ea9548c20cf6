"""One training run and its parts: the objective, the optimiser, checkpoints, the summary."""
