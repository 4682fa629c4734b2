"""Air-gapped transfer: the instance's signing key and trust store, signed OCI bundles, and the
`hubwarden export` / `hubwarden import` commands that carry verified repos across the gap.

    errors.py    KeysError, BundleError, SignatureError (all HubwardenError: exit 1 in the CLI)
    keys.py      the signing key (ECDSA P-256) under the data directory, and the trusted keys
    signing.py   a Sigstore bundle (DSSE envelope over an in-toto statement): sign and verify
    jsonsafe.py  JSON from a bundle, parsed with bounds (size, depth, items, no duplicate keys)
    tarstream.py a strict tar writer and reader (regular files only, bounded, streamed)
    oci.py       the OCI image layout: plan, write (directory or tar), read back as a stream
    bundle.py    the three together: what export and import call
    state.py     Hubwarden's state of a revision (the JSON beside each manifest): its format,
                 written and parsed as hostile input
    boms.py      the AI-BOM of each revision: made at export, checked and kept at import
    export.py    `hubwarden export`: revisions read from the database and the blob store
    judge.py     what an import may change, judged against this mirror's records (pins,
                 history rewrites, recorded commits): pure
    import_signatures.py  the model signatures of imported commits, verified offline
    importer.py  `hubwarden import`: verify, judge, stage, scan, then one transaction
    commands.py  `hubwarden keys …`, `export`, `import` (the argparse edge)

The library modules (keys … bundle) touch neither the database nor the blob store; export.py
and importer.py do, through proxy.store.bundles (the queries and the import's transaction).
"""
