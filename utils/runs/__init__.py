"""A run's files: its state (for resuming), its record and results, and its lock."""
