"""Hubwarden's scanners: parse model files, never load them.

PLACEHOLDER for the scanner package being built (issue 4): `scan_file` and `StreamScan` below are
the contract the proxy's ingest uses; their full implementations replace this file.
"""

from scanners.report import Finding, JsonValue, Outcome, ScanReport, Severity

__all__ = ["Finding", "JsonValue", "Outcome", "ScanReport", "Severity"]
