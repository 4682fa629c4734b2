"""The fake Hub's own tests use the fixtures every other test uses."""

from tests.fakehub.plugin import fake_hub, tiny_model_files

__all__ = ["fake_hub", "tiny_model_files"]
