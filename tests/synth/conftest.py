# The digits data and the trained teacher are session fixtures in tests/conftest.py.
