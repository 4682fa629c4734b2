"""Hubwarden's scanners: parse model files, never load them.

`scan_file(path, name=...)` scans one file and returns a `ScanReport`; `StreamScan` scans bytes as
they arrive and says how much of the file may already be sent (the proxy's ingest uses it);
`hubwarden scan` (`scanners.cli`) is the command line. Nothing here imports aiohttp or `proxy`.
"""

from scanners.dispatch import scan_file, scan_stream
from scanners.incremental import StreamScan
from scanners.limits import ArchiveLimits, NumpyLimits, PickleLimits, ScanLimits
from scanners.report import Finding, JsonValue, Outcome, ScanReport, Severity

__all__ = [
    "ArchiveLimits",
    "Finding",
    "JsonValue",
    "NumpyLimits",
    "Outcome",
    "PickleLimits",
    "ScanLimits",
    "ScanReport",
    "Severity",
    "StreamScan",
    "scan_file",
    "scan_stream",
]
