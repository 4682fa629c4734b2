"""Risk cards of three fake-Hub repos that differ in their dimensions, as `hubwarden risk` prints
them (the closing note of issue 11 shows this output).

    python bench/risk_cards.py            # from the repository root; about 20 s

In one process: the fake Hub (tests/fakehub) with three repos, a Hubwarden in front of it with
`[policy] max_risk = "medium"` and a trusted signing key, every file of each repo asked for through
the real client (`hf_hub_download`; what max_risk or another rule holds is listed), then
`hubwarden risk REPO` for each, run as the CLI runs (its own event loop, the same data directory):

1. `acme/bert-base`: a verified organisation, Apache-2.0, safetensors only, signed by the trusted
   key, fresh: low everywhere; served.
2. `newbie/chat-pickle`: a user account five days old, gated (automatic approval), a
   non-commercial licence, pickled weights: held for licence, file-format safety and publisher.
3. `acme/legacy-remote-code`: MIT, but custom modeling code, a commit two years old and three
   upstream commits not mirrored yet, and the Hub's own scan flagging its weights: held for its
   remote code.

Nothing here is measured; it decides nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402 - needs the repository root on sys.path
from huggingface_hub import hf_hub_download  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402
from safetensors.numpy import save  # noqa: E402

from proxy.cli import main  # noqa: E402
from tests.fakehub.hub import FakeHub  # noqa: E402
from tests.fakehub.model import Clock  # noqa: E402
from tests.proxyplugin import proxy_settings, start_proxy  # noqa: E402
from tests.signing import SIGNATURE_FILE, make_key, sign_with_key  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
APACHE = b"                                 Apache License\n   Version 2.0, January 2004\n"
MIT = b"MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy"


def _weights(value: float) -> bytes:
    return save({"w": np.full((8, 8), value, dtype=np.float32)})


def _publish(hub: FakeHub, workdir: Path) -> tuple[Path, dict[str, list[str]]]:
    """The three repos; returns the trusted public key and each repo's files."""
    hub.add_organization("acme", verified=True, created_at=NOW - dt.timedelta(days=1500))
    hub.add_user("newbie", created_at=NOW - dt.timedelta(days=5))
    key = make_key(workdir / "keys", "acme-release")
    hub.state.clock = Clock(NOW - dt.timedelta(days=2))
    clean = {
        "config.json": b'{"model_type": "bert", "hidden_size": 8}',
        "model.safetensors": _weights(1.0),
        "LICENSE": APACHE,
        "README.md": b"# BERT base\n",
    }
    signed = {**clean, SIGNATURE_FILE: sign_with_key(workdir / "sign", clean, key)}
    hub.create_repo("acme/bert-base", files=signed, card_data={"license": "apache-2.0"},
                    lfs=["model.safetensors"])  # fmt: skip
    pickled = {
        "config.json": b'{"model_type": "llama"}',
        "pytorch_model.bin": pickle.dumps({"w": [0.5] * 64}, protocol=2),
        "README.md": b"# chat\n",
    }
    gated = hub.create_repo("newbie/chat-pickle", files=pickled, gated="auto",
                            card_data={"license": "cc-by-nc-4.0"})  # fmt: skip
    gated.granted.add("bench")
    hub.state.clock = Clock(NOW - dt.timedelta(days=730))
    legacy = {
        "config.json": b'{"model_type": "custom", "auto_map": {"AutoModel": "modeling.Net"}}',
        "modeling.py": b"import torch\n\n\nclass Net(torch.nn.Module):\n    pass\n",
        "model.safetensors": _weights(2.0),
        "LICENSE": MIT,
    }
    repo = hub.create_repo("acme/legacy-remote-code", files=legacy, card_data={"license": "mit"})
    repo.security_repo_status = {"scansDone": True, "filesWithIssues": ["model.safetensors"]}
    files = {
        "acme/bert-base": sorted(signed),
        "newbie/chat-pickle": sorted(pickled),
        "acme/legacy-remote-code": sorted(legacy),
    }
    return key.public, files


def _download(url: str, cache: Path, repo_id: str, path: str, token: str | bool) -> str:
    try:
        hf_hub_download(repo_id, path, endpoint=url, cache_dir=cache, token=token)
    except HfHubHTTPError as exc:
        lines = [line for line in str(exc).splitlines() if "Forbidden" in line]
        return (lines[0] if lines else str(exc).splitlines()[0])[:220]
    return "served"


async def run(workdir: Path) -> None:
    async with FakeHub() as hub:
        public, files = _publish(hub, workdir)
        token = hub.add_user("bench")
        trusted = [{"name": "ACME release key", "repos": ["acme/*"], "public_key": str(public)}]
        settings = proxy_settings(
            hub, workdir / "data", **{"policy.max_risk": "medium", "policy.remote_code": "allow",
                                      "signing.trusted": trusted}
        )  # fmt: skip
        proxy, runner = await start_proxy(settings, workdir / "client")
        try:
            for repo_id, paths in files.items():
                print(f"== {repo_id}: every file asked for through {proxy.url}")
                for path in paths:
                    said = await asyncio.to_thread(
                        _download, proxy.url, workdir / "client", repo_id, path, token
                    )
                    print(f"   {path}: {said}")
            legacy = hub.repo("acme/legacy-remote-code")
            legacy.clock = Clock(NOW - dt.timedelta(days=1))
            for n in range(3):  # upstream moves on: three commits this mirror has not seen
                legacy.commit({"README.md": f"# v{n + 2}\n".encode()}, message=f"v{n + 2}")
        finally:
            await runner.cleanup()
        config = workdir / "hubwarden.toml"
        config.write_text(
            f'upstream = "{hub.url}"\ndata_dir = "{workdir / "data"}"\n'
            '[policy]\nmax_risk = "medium"\n'
        )
        for repo_id in files:
            print()
            print(f"$ hubwarden risk {repo_id}")
            sys.stdout.flush()
            code = await asyncio.to_thread(main, ["risk", repo_id, "--config", str(config)])
            sys.stdout.flush()
            if code != 0:
                raise SystemExit(f"hubwarden risk {repo_id} exited {code}")


def entry() -> None:
    with tempfile.TemporaryDirectory(prefix="risk-cards-") as folder:
        asyncio.run(run(Path(folder)))


if __name__ == "__main__":
    entry()
