"""Evaluation (numpy and scikit-learn only): metrics, submission scoring, intervals, ensemble rules."""
