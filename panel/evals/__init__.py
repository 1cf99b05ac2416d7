"""Instruction-following evaluation: suite files, deterministic checks, scoring, an optional judge, runs."""
