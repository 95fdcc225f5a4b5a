"""Mining fixtures: one local Spark session for the whole test session (starting one takes seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

SPARK_MASTER = "local[2]"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from mining.spark import get_spark

    session = get_spark(SPARK_MASTER, app_name="edgemine-tests", conf={"spark.sql.shuffle.partitions": "4"})
    yield session
