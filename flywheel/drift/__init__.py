"""Drift: how far this week's traffic is from the eval set, its clusters and its hand-off to sampling."""
