"""What every stage shares: settings, the DuckDB store and the shared types. Nothing else."""
