"""distill baselines; every module here registers itself on import."""
