"""Reading a user's YAML file (run configs, Serve configs): one mapping, or one line
naming the file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_mapping(path: Path, what: str, error: type[Exception]) -> dict:
    """The mapping in ``path`` (an empty file is an empty mapping). Raises ``error`` naming the
    file when it cannot be read, is not YAML, or holds something other than a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise error(f"{path}: cannot read {what}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} is a mapping of sections, got {type(raw).__name__}")
    return raw
