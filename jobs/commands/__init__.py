"""One module per CLI capability. Each exposes `register(app)` and imports heavy libraries lazily."""


def examples(*lines: str) -> str:
    """A command's `--help` epilog: "Examples:" and one command line per paragraph (rich keeps them apart)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)
