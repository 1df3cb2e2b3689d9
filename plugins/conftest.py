"""The plugins' own tests share deeppot's fixtures and hypothesis profile."""

from tests.conftest import x64  # noqa: F401
