"""Baselines evaluated by the same harness as OneRec: popularity, SASRec (cross-entropy), TIGER-style."""
