"""One policy for untrusted sizes: how much of a value a message quotes, how big a spec or rule may be.

Every layer takes its limits from here, so a user (or an attacker) meets the same bounds everywhere:

- a message quotes at most MAX_QUOTED_CHARS of a value (`quote`), so an error about a huge input is short;
- a YAML job spec is at most MAX_SPEC_BYTES and expands to at most MAX_SPEC_VALUES values (`load_yaml`:
  YAML aliases are references, so a 440-byte "billion laughs" spec is a DAG of a billion leaves);
- a trigger rule is at most MAX_RULE_CHARS characters and MAX_RULE_DEPTH levels deep;
- an image is decoded only when its header claims at most MAX_IMAGE_PIXELS pixels (`images.decode_rgb`);
- the review service reads at most `Settings.max_body_bytes` of a request body (default MAX_BODY_BYTES).
"""

from __future__ import annotations

from typing import Any

from edgemine.errors import ConfigError

MAX_QUOTED_CHARS = 200
MAX_SPEC_BYTES = 1 << 20  # 1 MiB
MAX_SPEC_VALUES = 100_000
MAX_RULE_CHARS = 2_000
MAX_RULE_DEPTH = 50
MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000; a frame claiming more is a decompression bomb, refused unread


def quote(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """repr(value), cut to `limit` characters with a note of how long it was (never walks a huge value)."""
    if isinstance(value, (list, tuple, dict, set)) and _too_big(value, limit):
        return f"<{type(value).__name__} of more than {limit} values>"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _too_big(obj: Any, limit: int) -> bool:
    return expanded_size(obj, limit) > limit


def expanded_size(obj: Any, limit: int) -> int:
    """How many values `obj` holds with shared references counted every time; stops counting past `limit`."""
    count = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return count


def load_yaml(text: str, *, source: str) -> Any:
    """yaml.safe_load within the size policy: ConfigError when the text or its expansion is too big."""
    import yaml

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise ConfigError(f"{source}: {size:,} bytes is more than the {MAX_SPEC_BYTES:,} a job spec may have")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {quote(str(exc), 400)}".replace("\n", " ")) from None
    if expanded_size(data, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise ConfigError(f"{source}: expands to more than {MAX_SPEC_VALUES:,} values (YAML aliases nested "
                          "too deep?); a job spec is a small mapping of fields")
    return data
