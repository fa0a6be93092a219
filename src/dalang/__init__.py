"""dalang: one Python pipeline, run on the best platform and at the site that owns the data."""
