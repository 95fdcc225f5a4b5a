"""Mining fixtures: one local Spark session for the whole test session (starting one takes seconds)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.mining.helpers import shared_spark


@pytest.fixture(scope="session")
def spark() -> Any:
    return shared_spark()
