"""Stage 2: events → rollups → findings → decisions (rule engine; not built yet)."""
