"""Evaluation: metrics, the leave-one-out and next-session harnesses, and baselines run by the same code."""
