"""A fake upstream Hugging Face Hub (Hub origin + CDN origin on loopback) for the tests.

It answers like the real Hub as hub-protocol.md describes it, including the Xet signals a proxy
must strip, and records every request. Start with `FakeHub` or the ``fake_hub`` fixture of
`tests.fakehub.plugin`; populate repos with the factories there.
"""

from tests.fakehub.gitobjects import FileBlob, LfsRule, git_blob_sha1, lfs_pointer
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Commit, Repo, RepoKey, RepoType
from tests.fakehub.traffic import Fault, Origin, RecordedRequest, Stall, Throttle

__all__ = [
    "Commit",
    "FakeHub",
    "Fault",
    "FileBlob",
    "LfsRule",
    "Origin",
    "RecordedRequest",
    "Repo",
    "RepoKey",
    "RepoType",
    "Stall",
    "Throttle",
    "git_blob_sha1",
    "lfs_pointer",
]
