"""Benchmarks (`streamrec bench <name>`): each runs its reference in the same process and prints ratios."""
