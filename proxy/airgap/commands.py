"""`hubwarden keys create|show|trust|list|untrust`: the signing key and the trusted keys.

    hubwarden keys create                          make this instance's signing key (once)
    hubwarden keys show [--json]                   its fingerprint and public key (PEM)
    hubwarden keys trust PUBLIC_KEY_FILE --name N  trust another instance's public key
    hubwarden keys list [--json]                   the trusted keys
    hubwarden keys untrust NAME                    stop trusting one

`keys show > dmz.pub` on the exporting instance writes a file that `keys trust dmz.pub --name dmz`
takes as it is; compare the fingerprint both print over a second channel. Exit 0: done; 1: the
command failed (one line on stderr: what, and what to do); 2: bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from proxy.admin.commands import DataDirMissing
from proxy.airgap.errors import KeysError
from proxy.airgap.keys import KeyStore, check_name, read_key_file
from proxy.config import Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
EXIT_OK = 0


def register(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `keys` to the `hubwarden` parser (`load` reads the settings, `add_options` adds
    --config and --data-dir)."""
    parser = commands.add_parser(
        "keys",
        help="the signing key bundles are signed with, and the keys trusted to sign them",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    def store(args: argparse.Namespace) -> KeyStore:
        settings = load(args)
        if not settings.data_dir.is_dir():  # a key made in the wrong place would never be used
            raise DataDirMissing(settings.data_dir)
        return KeyStore(settings.data_dir)

    create = actions.add_parser("create", help="make this instance's signing key (once)")
    add_options(create)

    def run_create(args: argparse.Namespace) -> int:
        keys = store(args)
        info = keys.create()
        _out(f"created the signing key {keys.signing_path}\nfingerprint: {info.fingerprint}")
        return EXIT_OK

    create.set_defaults(command=run_create)

    show = actions.add_parser("show", help="print the signing key's fingerprint and public key")
    add_options(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")

    def run_show(args: argparse.Namespace) -> int:
        info = store(args).show()
        if args.json:
            _out(json.dumps({"fingerprint": info.fingerprint, "public_key": info.pem}))
        else:
            _out(f"fingerprint: {info.fingerprint}\n{info.pem.rstrip()}")
        return EXIT_OK

    show.set_defaults(command=run_show)

    trust = actions.add_parser("trust", help="trust another instance's public key")
    add_options(trust)
    trust.add_argument("public_key_file", type=Path, metavar="PUBLIC_KEY_FILE")
    trust.add_argument("--name", required=True, type=_name, help="what to call the key")

    def run_trust(args: argparse.Namespace) -> int:
        key = store(args).trust(read_key_file(args.public_key_file), args.name)
        _out(f"trusted {key.name}\nfingerprint: {key.fingerprint}")
        return EXIT_OK

    trust.set_defaults(command=run_trust)

    listing = actions.add_parser("list", help="list the trusted keys")
    add_options(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    def run_list(args: argparse.Namespace) -> int:
        keys = store(args).trusted()
        if args.json:
            _out(json.dumps([{"name": k.name, "fingerprint": k.fingerprint} for k in keys]))
        elif not keys:
            _out("no trusted keys; add one with `hubwarden keys trust PUBLIC_KEY_FILE --name N`")
        else:
            width = max(len(k.name) for k in keys)
            _out("\n".join(f"{k.name:<{width}}  {k.fingerprint}" for k in keys))
        return EXIT_OK

    listing.set_defaults(command=run_list)

    untrust = actions.add_parser("untrust", help="stop trusting a key")
    add_options(untrust)
    untrust.add_argument("name", type=_name, metavar="NAME")

    def run_untrust(args: argparse.Namespace) -> int:
        store(args).untrust(args.name)
        _out(f"no longer trusting {args.name}")
        return EXIT_OK

    untrust.set_defaults(command=run_untrust)


def _name(value: str) -> str:
    """argparse type: a bad name is a usage error (exit 2)."""
    try:
        return check_name(value)
    except KeysError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
