"""Evaluation: metrics, calibration, and the reports (tables and plots) of a run."""
