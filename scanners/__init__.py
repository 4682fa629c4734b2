"""Hubwarden's scanners: parse model files, never load them.

`scan_file(path, name=...)` scans one file and returns a `ScanReport`; `StreamScan` scans bytes as
they arrive and says how much of the file may already be sent (the proxy's ingest uses it);
`hubwarden scan` (`scanners.cli`) is the command line. Nothing here imports aiohttp or `proxy`.

All three drive one registry of format scanners (`scanners.registry`: which scanner takes each
format `detect_format` names, how a stream of it is cleared as it arrives), bounded by one limits
tree (`ScanLimits`, a child per format); containers recurse through the scan context
(`scanners.scan_context`).
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
