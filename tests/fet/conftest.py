from tests.fet.helpers import trained_tiny  # noqa: F401  (session fixture)
