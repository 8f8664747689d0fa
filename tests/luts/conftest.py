# demo_lut is a session fixture in tests/conftest.py.
