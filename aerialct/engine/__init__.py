"""Training engine: task (named loss terms), loop, checkpoints, metrics."""
