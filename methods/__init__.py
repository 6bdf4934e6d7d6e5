"""The featured methods (STemDist, ST-Prune)."""
