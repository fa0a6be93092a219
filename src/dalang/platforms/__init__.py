"""Execution platforms: each runs plan fragments and takes and returns Arrow."""
