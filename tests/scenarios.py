"""Moved: the labelled traffic generator lives in sample_logs/scenarios.py (the demo month uses it too)."""
from sample_logs.scenarios import *  # noqa: F401,F403
from sample_logs.scenarios import asn_networks, generate  # noqa: F401
