"""One module per CLI capability. Each exposes `register(app)` and imports heavy libraries lazily."""
