"""The models: the distilled student (its encoders) and the two teachers."""
