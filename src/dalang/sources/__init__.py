"""Where data comes from: files and in-memory tables, with the statistics the optimizer reads."""
