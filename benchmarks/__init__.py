"""Benchmarks: ``make bench`` runs :mod:`benchmarks.run`, every case in a fresh process."""
