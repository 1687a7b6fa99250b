"""Tests of the shared edges: object store, database, settings and the CLI's errors."""
