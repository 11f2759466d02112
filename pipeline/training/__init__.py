"""Training: a fold's loop, checkpoints and resume, hardware and precision."""
