"""Fixtures for the embedding tests: tiny models and frames (Ray comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def baseline_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained baseline CNN exported like `train-baseline` does (weights from a fixed seed)."""
    import torch

    from edgemine.embeddings.baseline import MODEL_KIND, BaselineCNN, export_model

    torch.manual_seed(3)
    model = BaselineCNN(5, width=8)
    path = tmp_path_factory.mktemp("models") / "baseline.pt"
    meta = {"kind": MODEL_KIND, "class_names": ["car", "cyclist", "none", "pedestrian", "truck"], "input_size": 64,
            "width": 8, "embedding_dim": 64}
    return export_model(model, path, meta=meta)
