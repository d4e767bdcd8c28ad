"""The DR site: receives deltas, commits them atomically, keeps recovery points."""
