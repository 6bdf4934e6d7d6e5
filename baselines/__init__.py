"""Every comparison method, one file each, grouped by family (coreset, distill, timeseries, pruning)."""
