# The digits data and the trained teacher are session fixtures in tests/conftest.py.
import pytest


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Every device test runs on the CPU here, and again on CUDA where there is one."""
    return request.param
