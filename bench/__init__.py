"""Benchmarks of the engine against the physical limits of its parts; ``make bench`` runs them."""
