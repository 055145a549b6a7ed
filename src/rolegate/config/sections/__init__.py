"""One module per top-level config section."""
