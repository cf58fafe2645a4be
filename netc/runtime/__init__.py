"""Running a compiled plan: data sources, optimizers, training/eval loops, checkpoints, metrics."""
