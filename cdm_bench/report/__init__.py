"""Leaderboard statistics and reports built from stored per-image scores."""
