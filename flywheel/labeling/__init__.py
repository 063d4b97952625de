"""Labeling: labels, label claims, agreement between labelers, the taxonomy, code checks."""
