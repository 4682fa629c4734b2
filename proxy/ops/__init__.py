"""Operations: what Hubwarden tells the people and systems that run it (webhooks)."""
