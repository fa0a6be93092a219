"""The optimizer: rewrite rules, cardinality and cost estimates, and platform placement."""
