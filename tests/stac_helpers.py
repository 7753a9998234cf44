"""Validate STAC documents against the JSON schemas kept in tests/data/stac, offline.

The schemas are copies of the published ones, stored under their URL's host and path
(tests/data/stac/<host>/<path>; tests/data/stac/SOURCES.md says where each came from),
so a ``$ref`` to any of them resolves without the network, and a schema that is not
kept makes validation fail instead of fetching it.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

SCHEMAS = Path(__file__).parent / "data" / "stac"
ITEM = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
CATALOG = "https://schemas.stacspec.org/v1.1.0/catalog-spec/json-schema/catalog.json"


def _local(uri: str) -> Path:
    parts = urlsplit(uri)
    return SCHEMAS / parts.netloc / parts.path.lstrip("/")


def _registry():
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    def retrieve(uri: str):
        path = _local(uri.rstrip("#"))
        if not path.is_file():
            raise NoSuchResource(ref=uri)
        return Resource.from_contents(json.loads(path.read_text()))

    return Registry(retrieve=retrieve)


def validate(doc: dict) -> list[str]:
    """Validate a STAC Item or Catalog (dict) against core and every extension it lists.

    Returns the schema URLs checked; raises ``jsonschema.ValidationError`` on an error and
    ``referencing`` errors when a schema is not kept offline.
    """
    import jsonschema

    core = ITEM if doc.get("type") == "Feature" else CATALOG
    checked = []
    for uri in [core, *doc.get("stac_extensions", [])]:
        path = _local(uri)
        assert path.is_file(), f"schema {uri} is not kept in {SCHEMAS}"
        schema = json.loads(path.read_text())
        cls = jsonschema.validators.validator_for(schema)
        validator = cls(schema, registry=_registry())
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:  # the deepest reason, not "not valid under any of the schemas"
            deepest = min([error, *error.context], key=lambda e: -len(e.absolute_path) if e else 0)
            raise jsonschema.ValidationError(
                f"{uri}: {deepest.message} at {list(deepest.absolute_path)}"
            )
        checked.append(uri)
    return checked


def validate_file(path: Path) -> dict:
    """Read and :func:`validate` a STAC JSON file; return the document."""
    doc = json.loads(Path(path).read_text())
    validate(doc)
    return doc
