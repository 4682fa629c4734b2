"""Air-gapped transfer: the instance's signing key and trust store, signed OCI bundles.

    errors.py    KeysError, BundleError, SignatureError (all HubwardenError: exit 1 in the CLI)
    keys.py      the signing key (ECDSA P-256) under the data directory, and the trusted keys
    signing.py   a Sigstore bundle (DSSE envelope over an in-toto statement): sign and verify
    jsonsafe.py  JSON from a bundle, parsed with bounds (size, depth, items, no duplicate keys)
    tarstream.py a strict tar writer and reader (regular files only, bounded, streamed)
    oci.py       the OCI image layout: plan, write (directory or tar), read back as a stream
    bundle.py    the three together: what `hubwarden export` and `hubwarden import` call
    commands.py  `hubwarden keys …` (the argparse edge)

Nothing here touches the database or the blob store: the export/import glue hands in files,
digests and state, and takes back verified blobs and state.
"""
