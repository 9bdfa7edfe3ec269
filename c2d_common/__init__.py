"""Code shared by the provider, operator and engine: status table, errors, server bootstrap, logging."""
