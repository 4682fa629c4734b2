"""Licences as the risk card sees them: the Hub's licence ids (the `license` key of a repo card)
and the text of `LICENSE*` files, each classified as permissive, copyleft, custom/restricted or
unknown, with the SPDX id where one exists.

The Hub's ids are its own lower-case spellings ("apache-2.0", "cc-by-nc-4.0", "llama3",
"other"); most map onto an SPDX id, the model licences with use restrictions (Llama, Gemma,
OpenRAIL, non-commercial Creative Commons) are custom or restricted whatever their SPDX id. A
licence text is recognised by the title lines licences open with. Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_TEXT_CHARS = 16_384  # licence titles come first: the head of a file is enough


class LicenceClass(enum.StrEnum):
    """What a licence lets a company do with the weights, coarsely."""

    PERMISSIVE = "permissive"
    COPYLEFT = "copyleft"
    RESTRICTED = "custom-restricted"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Licence:
    """A classified licence: the id it was given as (Hub id, or the file it came from), its
    class and its SPDX id when it has one."""

    name: str
    kind: LicenceClass
    spdx: str | None = None


_P, _C, _R = LicenceClass.PERMISSIVE, LicenceClass.COPYLEFT, LicenceClass.RESTRICTED

# Hub licence id → (class, SPDX id). Ids not listed are unknown (a typo, or a new Hub id).
HUB_LICENCES: dict[str, tuple[LicenceClass, str | None]] = {
    "apache-2.0": (_P, "Apache-2.0"),
    "mit": (_P, "MIT"),
    "bsd": (_P, "BSD-3-Clause"),
    "bsd-2-clause": (_P, "BSD-2-Clause"),
    "bsd-3-clause": (_P, "BSD-3-Clause"),
    "bsd-3-clause-clear": (_P, "BSD-3-Clause-Clear"),
    "isc": (_P, "ISC"),
    "zlib": (_P, "Zlib"),
    "bsl-1.0": (_P, "BSL-1.0"),
    "ecl-2.0": (_P, "ECL-2.0"),
    "afl-3.0": (_P, "AFL-3.0"),
    "artistic-2.0": (_P, "Artistic-2.0"),
    "postgresql": (_P, "PostgreSQL"),
    "ncsa": (_P, "NCSA"),
    "unlicense": (_P, "Unlicense"),
    "wtfpl": (_P, "WTFPL"),
    "cc0-1.0": (_P, "CC0-1.0"),
    "cc-by-2.0": (_P, "CC-BY-2.0"),
    "cc-by-2.5": (_P, "CC-BY-2.5"),
    "cc-by-3.0": (_P, "CC-BY-3.0"),
    "cc-by-4.0": (_P, "CC-BY-4.0"),
    "pddl": (_P, "PDDL-1.0"),
    "odc-by": (_P, "ODC-By-1.0"),
    "cdla-permissive-1.0": (_P, "CDLA-Permissive-1.0"),
    "cdla-permissive-2.0": (_P, "CDLA-Permissive-2.0"),
    "gpl": (_C, "GPL-3.0-or-later"),
    "gpl-2.0": (_C, "GPL-2.0-only"),
    "gpl-3.0": (_C, "GPL-3.0-only"),
    "lgpl": (_C, "LGPL-3.0-or-later"),
    "lgpl-2.1": (_C, "LGPL-2.1-only"),
    "lgpl-3.0": (_C, "LGPL-3.0-only"),
    "agpl-3.0": (_C, "AGPL-3.0-only"),
    "mpl-2.0": (_C, "MPL-2.0"),
    "epl-1.0": (_C, "EPL-1.0"),
    "epl-2.0": (_C, "EPL-2.0"),
    "eupl-1.1": (_C, "EUPL-1.1"),
    "eupl-1.2": (_C, "EUPL-1.2"),
    "osl-3.0": (_C, "OSL-3.0"),
    "gfdl": (_C, "GFDL-1.3-or-later"),
    "cc-by-sa-3.0": (_C, "CC-BY-SA-3.0"),
    "cc-by-sa-4.0": (_C, "CC-BY-SA-4.0"),
    "odbl": (_C, "ODbL-1.0"),
    "cdla-sharing-1.0": (_C, "CDLA-Sharing-1.0"),
    "cc-by-nc-2.0": (_R, "CC-BY-NC-2.0"),
    "cc-by-nc-3.0": (_R, "CC-BY-NC-3.0"),
    "cc-by-nc-4.0": (_R, "CC-BY-NC-4.0"),
    "cc-by-nd-4.0": (_R, "CC-BY-ND-4.0"),
    "cc-by-nc-nd-3.0": (_R, "CC-BY-NC-ND-3.0"),
    "cc-by-nc-nd-4.0": (_R, "CC-BY-NC-ND-4.0"),
    "cc-by-nc-sa-2.0": (_R, "CC-BY-NC-SA-2.0"),
    "cc-by-nc-sa-3.0": (_R, "CC-BY-NC-SA-3.0"),
    "cc-by-nc-sa-4.0": (_R, "CC-BY-NC-SA-4.0"),
    "openrail": (_R, None),
    "openrail++": (_R, None),
    "creativeml-openrail-m": (_R, None),
    "bigscience-openrail-m": (_R, None),
    "bigscience-bloom-rail-1.0": (_R, None),
    "bigcode-openrail-m": (_R, None),
    "llama2": (_R, None),
    "llama3": (_R, None),
    "llama3.1": (_R, None),
    "llama3.2": (_R, None),
    "llama3.3": (_R, None),
    "llama4": (_R, None),
    "gemma": (_R, None),
    "deepfloyd-if-license": (_R, None),
    "apple-ascl": (_R, None),
    "apple-amlr": (_R, None),
    "intel-research": (_R, None),
    "lgpl-lr": (_R, None),
    "c-uda": (_R, "C-UDA-1.0"),
    "fair-noncommercial-research-license": (_R, None),
    "h-research": (_R, None),
    "other": (_R, None),  # the card names its own terms (license_name / license_link)
}

# The first lines of well-known licence texts → the Hub id they stand for (checked in order).
_TEXT_TITLES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), hub_id)
    for pattern, hub_id in (
        (r"Apache License,?\s+Version 2\.0", "apache-2.0"),
        (r"\bMIT License\b|Permission is hereby granted, free of charge", "mit"),
        (r"GNU AFFERO GENERAL PUBLIC LICENSE", "agpl-3.0"),
        (r"GNU LESSER GENERAL PUBLIC LICENSE", "lgpl"),
        (r"GNU GENERAL PUBLIC LICENSE\s+Version 3", "gpl-3.0"),
        (r"GNU GENERAL PUBLIC LICENSE\s+Version 2", "gpl-2.0"),
        (r"Mozilla Public License,?\s+(Version|v\.?)\s*2\.0", "mpl-2.0"),
        (r"LLAMA 4 COMMUNITY LICENSE", "llama4"),
        (r"LLAMA 3\.3 COMMUNITY LICENSE", "llama3.3"),
        (r"LLAMA 3\.2 COMMUNITY LICENSE", "llama3.2"),
        (r"LLAMA 3\.1 COMMUNITY LICENSE", "llama3.1"),
        (r"LLAMA 3 COMMUNITY LICENSE", "llama3"),
        (r"LLAMA 2 COMMUNITY LICENSE", "llama2"),
        (r"Gemma Terms of Use", "gemma"),
        (r"CreativeML Open RAIL-M", "creativeml-openrail-m"),
        (r"BigScience (Open )?RAIL", "bigscience-openrail-m"),
        (r"Open RAIL", "openrail"),
        (r"Attribution-NonCommercial", "cc-by-nc-4.0"),
        (r"Attribution-ShareAlike 4\.0", "cc-by-sa-4.0"),
        (r"Creative Commons Attribution 4\.0|Attribution 4\.0 International", "cc-by-4.0"),
        (r"CC0 1\.0 Universal", "cc0-1.0"),
        (r"BSD 3-Clause|Redistribution and use in source and binary forms", "bsd-3-clause"),
        (r"This is free and unencumbered software released into the public domain", "unlicense"),
    )
)
_LICENCE_FILE = re.compile(
    r"(?:.*/)?(?:LICEN[CS]E|COPYING)(?:[.-][A-Za-z0-9._-]*)?(?<!\.py)", re.IGNORECASE
)


def classify_hub_id(value: str) -> Licence:
    """The licence a card's `license` value names (case and spaces ignored)."""
    key = value.strip().lower()
    kind, spdx = HUB_LICENCES.get(key, (LicenceClass.UNKNOWN, None))
    return Licence(value.strip()[:100], kind, spdx)


def classify_text(name: str, text: str) -> Licence:
    """The licence a file's text is, by the title it opens with; unknown when none matches
    (a custom licence text: the card must say what it is)."""
    head = text[:MAX_TEXT_CHARS]
    for pattern, hub_id in _TEXT_TITLES:
        if pattern.search(head):
            kind, spdx = HUB_LICENCES[hub_id]
            return Licence(name, kind, spdx)
    return Licence(name, LicenceClass.UNKNOWN)


def is_licence_file(path: str) -> bool:
    """LICENSE, LICENCE, COPYING, with any extension (LICENSE.txt, LICENSE-MODEL), any folder."""
    return _LICENCE_FILE.fullmatch(path) is not None
