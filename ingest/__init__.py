"""Stage 1: access logs → events in DuckDB, exactly once, enriched with ASN and country."""
