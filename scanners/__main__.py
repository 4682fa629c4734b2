"""`python -m scanners PATH…`: the same as `hubwarden scan PATH…`."""

from scanners.cli import main

raise SystemExit(main())
