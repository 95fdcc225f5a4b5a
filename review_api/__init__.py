"""The review service: FastAPI app, storage, auth, reviewer page."""
