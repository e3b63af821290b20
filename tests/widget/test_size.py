"""The widget stays tiny: widget/dist/widget.js ≤ 15 KB gzipped (aim ≤ 10 KB); the manifest matches."""
from __future__ import annotations

import gzip
import hashlib
import json

from support.browser import WIDGET, build_widget

BUDGET = 15 * 1024
AIM = 10 * 1024


def test_gzipped_size_within_budget():
    js = build_widget().read_bytes()
    size = len(gzip.compress(js, compresslevel=9))
    print(f"\nwidget.js: {len(js)} bytes, {size} bytes gzipped ({size / 1024:.2f} KB; budget {BUDGET // 1024} KB,"
          f" aim {AIM // 1024} KB)")
    assert size <= BUDGET, f"widget.js is {size} bytes gzipped, over the {BUDGET}-byte budget"


def test_manifest_names_the_hashed_copy():
    js = build_widget().read_bytes()
    manifest = json.loads((WIDGET / "dist" / "manifest.json").read_text())
    digest = hashlib.sha256(js).hexdigest()[:16]
    assert manifest["hash"] == digest and manifest["hashed"] == f"widget.{digest}.js"
    assert (WIDGET / "dist" / manifest["hashed"]).read_bytes() == js
    assert manifest["bytes"] == len(js)
    assert manifest["integrity"].startswith("sha384-")


def test_no_inner_html_or_eval_in_the_bundle():
    js = build_widget().read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert banned not in js, banned
    assert "document.cookie" not in js
