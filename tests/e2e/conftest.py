"""The e2e tests drive the whole platform through the session's ``stack`` and ``platform``
fixtures (tests/conftest.py), shared with the hostile-input suite in tests/security."""
