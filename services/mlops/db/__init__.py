"""Application database: engine, schema and migrations."""
