"""Verification: metrics accumulated in a streaming way, baselines scored by the same code,
and reports (`metrics.json`, `report.html`, `report.md`)."""
