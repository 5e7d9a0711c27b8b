"""Input features computed from the audio ahead of training (prosodic low-level descriptors)."""
