"""Trust decisions: verdicts, pins, blocks, access and policy rules (DESIGN.md, rules of trust)."""
