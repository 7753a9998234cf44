"""Secrets in GDAL paths (signed URLs, credentials) are redacted wherever a path is shown."""

from __future__ import annotations

import pytest

from aerialct.geo.inputs import redact


@pytest.mark.parametrize(
    "given, shown",
    [
        ("https://user:pw@host:8080/a/b.tif?token=xyz#frag", "https://host:8080/a/b.tif"),
        ("/vsicurl/https://h/x.tif?sig=1&se=2", "/vsicurl/https://h/x.tif"),
        ("/vsicurl?url=https%3A%2F%2Fu%3Ap%40h%2Fx.tif%3Ftok%3D1&use_head=no",
         "/vsicurl/https://h/x.tif"),
        ("open /vsizip//vsicurl/https://a:b@h/z.zip/x.tif failed: 403",
         "open /vsizip//vsicurl/https://h/z.zip/x.tif failed: 403"),
        ("s3://bucket/k.tif", "s3://bucket/k.tif"),
        ("/data/flight/x.tif", "/data/flight/x.tif"),
        ("http://127.0.0.1:8000/s.tif", "http://127.0.0.1:8000/s.tif"),
        ("https://h/a.tif?token=x: not found", "https://h/a.tif: not found"),
        ("(read /vsicurl/https://h/a.tif?sig=1).", "(read /vsicurl/https://h/a.tif)."),
    ],
)  # fmt: skip
def test_user_information_and_query_strings_are_removed(given, shown):
    assert redact(given) == shown
