"""Tests in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""
