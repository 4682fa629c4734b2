"""Inputs the atheris runs of `tests/fuzz` found to crash, hang or exhaust a scanner (issue 13):
each is kept byte for byte (zlib, then base64: they are mutations of the fuzz seeds, which the
libraries would not write again byte for byte) with the input name it was scanned under.

They are judged by `tests/scanners/test_fuzz_inputs.py` in a child process with memory and CPU
limits, so that a regression costs the test a bounded child, never the test run.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FuzzCrash:
    name: str  # the repo file name it was scanned as
    packed: str  # zlib + base64 of the input
    found: str  # what the fuzzer saw, and where

    def data(self) -> bytes:
        return zlib.decompress(base64.b64decode(self.packed))


FUZZ_CRASHES: dict[str, FuzzCrash] = {
    # bench/fuzz_bench.py, target "stream" (a mutated h5py seed scanned as "blob"), 2026-12-05:
    # libFuzzer out-of-memory (2.4 GB RSS); `scan_file` alone peaks at 4.1 GB and takes 8 s,
    # inside h5py reading an attribute whose heap object claims a huge size.
    "hdf5_attribute_heap_oom.h5": FuzzCrash(
        "blob",
        (
            "eNrtWEFv0zAUTtqtiqYNdRLSRgUiymmHqeoGXDhtooUiTWxiOyBNU+Y2bmvhJiV2BmWquMI/4CfwEzhy5Cfwb4bt"
            "2F2SLm21CXGov4vn970+28/fe9H8rVl/ubZSWTE4LMtYMspGElcStp2eK/5cjqYcv8rxR0HZlwS3Ke1lGd8uxvOf"
            "0n7yttHg3lcZqHW+l+LRMjQWEc3G/hEf38m50tPvQtqvH3gQux8h6vYoSehy75brrku9ZnW9ajSlvu8Z95kq38MQ"
            "EPcChgQFPrM/ME3xy/J4D1aqTkoJMZupeGsiXnyOduB3UNeYIx6vFa94HbMgODNVe+osrCTjGizNV3u/Krr2dO1d"
            "1576QuyV0n4e9AlMaLJ5x3WP3xzWuYKV7v4U09+arI41bodXLw4PzMTFpnoUw25151m1FvcUcc/yHi4d1qUiDJ3n"
            "tiP6n7NtO20MCHF90BfmY/ghgj5FAAtOtDNmv3SUA0k50BAgH7RESBpGkJk8OhxA8ZOZi9VPmOtRgFF7mLNaBweA"
            "Ptl1RowOYRcRCkPoqQB+hDFnMBiyPs4MpxOLViU3sfZrfxDRA07mLI24A1YOUw463iSztQBt91zSA4I55Rvctp+e"
            "MYYMQEi4sQMwgVPPM/8h6ryAc/bvKW7OrUc+ojyHu+xv0KboAlD2ZeROIcSR8CDQbSFAZJwpZzjL53iSIoQ9N7Fl"
            "kerJrI3EwfoDhGHSOxhQ1Eef2b3cILLqmL0hXfse6OdkC0gKQxD6yO+6IaCcqFVrtZ0Z6gsIT4nTZ+kejZJ1er6q"
            "e5WGhoaGhoaGhoaGxt2Q9064JQ1N+f43651w81E86nfCxUTeO2GvkvZj/1n7EP+7d0IlZBU/q2ONvD6wHOfMVPOt"
            "eCzEBvncOn4HzM6LLPHcc91+LDnb2LCMjS+SX2Y3xPlCIQ5oyYsqmsxR+qfx6b/mI6sr66HWiMbi4S8wCJWL"
        ),
        "libFuzzer out-of-memory: h5py attrs[...] in scanners/keras.py _h5_config",
    ),
    # the same run: libFuzzer timeout (17 s, then > 120 s standalone), h5py attrs.__getitem__
    # never returns (scanners/keras.py _h5_config).
    "hdf5_attribute_hang.h5": FuzzCrash(
        "blob",
        (
            "eNrtWEFv0zAUTtKtiqYNdRLSoEIiymmHqeoKXDhtooUiTWxiOyBNU+Y2bmvNSUrsDMpUcYV/AP+An8CRIz+BfzNs"
            "x26Tdu2qIbTD/F08v+/re/bze47mr836y7WV8orBYdvGklEysriUcJz8XPGncjTl+EWOPyxlXxLcA2kvSf9OIZ3/"
            "lPajt40GV19OQMX5VkxH29C4i2g2dg/4+E7OVT39tvK6IPIh9j5A1O1RkqnLnRvGXZf1OlnXq0ZT1vc94z6ryjMY"
            "A+Kdw5igKGT2h6YpflkarcHO9UkxU8xmzt+a8Jfuox2FHdQ1FvDnF8b+LGE3c32n9sHaMe2/4mJ996us+0733bjv"
            "1Ndhp5jX+TAkMFOPzX+Me/hmv84rWNXdn0L+OzNZxxo3w6sX+3tm5mBz9xNDrbL9rFJN75TRPcNw4bIbKsHQfe64"
            "4u5ztxy3jQEhXggCYT6E7xMYUgSw4MRVxuwXrhKQnIDGAIWgJVzSOIHM5NNBH4qfXBusfsSkBxFG7cGMaB0cAfqk"
            "5g4ZHcMuIhTG0FcOwgRjzmAwYHc4MxxPBa1Ibir267Cf0D1OzgiNuAArwZyNjhbJbC1A2z2P9IBgjvkCt5ynJ4wh"
            "fRATbuwATODc/Sy+iTpv4Bnr9xW34NKTEFGewxr7G7QpOgeUfRW5KIY4EQoCvRYCRPqZs4eT2RxPUoKw72WWLFI9"
            "nbWh2FjQRxhm1VGfogB9YudyRZFVRuwV6dr1QTDO1vcxcokDUoUhiEMUdr0YUE5UK9Xq9jWFGBGeHTdgmR8Osy17"
            "uqqvLQ0NDQ0NDQ0NDQ0NDY3bx6wnw145r2P/ZIcQ/78nQ/X2rfxvynmzrM9oHkxjOc2Zqeab6WilBvnyOnoSnJwX"
            "WOK5ct15LDnH2LCNjc+SX2YnxHnLSh3a8qAKJhNKfR4fbzUfk3VlP9I1onH38Bf3E4Xm"
        ),
        "libFuzzer timeout: h5py attrs[...] in scanners/keras.py _h5_config never returns",
    ),
}


def write_fuzz_crashes(root: Path) -> dict[str, Path]:
    """Write every input under `root`; name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, crash in FUZZ_CRASHES.items():
        out[name] = root / name
        out[name].write_bytes(crash.data())
    return out
