"""The pullwarden command line."""
