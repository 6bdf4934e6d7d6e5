"""Controls: methods that isolate one ingredient of another method (e.g. its expert relabelling)."""
