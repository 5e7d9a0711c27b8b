"""Fitting: the student's batches, loop, losses and checkpoints; the teachers' fit; targets."""
