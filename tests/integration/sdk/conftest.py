"""Every SDK test runs on both clients, :class:`Client` and :class:`AsyncClient`."""

import pytest

from sdkkit import KINDS


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
