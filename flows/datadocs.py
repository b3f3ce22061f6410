"""Great Expectations Data Docs that render offline.

GX 1.24's page template loads jQuery, Bootstrap, bootstrap-table (which draws the index's rows) and
Font Awesome (the status icons) from CDNs, so opened on a machine without internet the index is
empty and the status column blank. This project runs offline, so after every Data Docs build the
pages are rewritten to use copies vendored in `flows/datadocs_static/` (versions and licenses in
its README), copied into the site's `static/vendor/`. Vega (charts) is dropped from pages that draw
no chart; the dark-theme stylesheet is dropped (light theme only); links to GX's documentation
stay links.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

VENDORED = Path(__file__).resolve().parent / "datadocs_static"
VENDOR_DIR = "static/vendor"

# last component of a CDN url -> the vendored file (None: drop the tag)
LOCAL = {
    "jquery-3.7.1.min.js": "js/jquery.min.js",
    "popper.min.js": "js/popper.min.js",
    "bootstrap.min.js": "js/bootstrap.min.js",
    "bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "bootstrap-table-filter-control.min.js": "js/bootstrap-table-filter-control.min.js",
    "bootstrap-datepicker.min.js": "js/bootstrap-datepicker.min.js",
    "bootstrap.min.css": "css/bootstrap.min.css",
    "bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "bootstrap-table-filter-control.min.css": "css/bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.css": "css/bootstrap-table-filter-control.min.css",  # validation pages
    "bootstrap-datepicker.min.css": "css/bootstrap-datepicker.min.css",
    "all.min.css": "css/all.min.css",  # Font Awesome 6.6.0
    "bootstrap-prefers-dark.css": None,
}
VEGA = ("vega@5", "vega-lite@5", "vega-embed@6")

_SCRIPT = re.compile(r'<script\b[^>]*\bsrc="(https?://[^"]+)"[^>]*>\s*</script>')
_STYLESHEET = re.compile(r'<link\b[^>]*\bhref="(https?://[^"]+)"[^>]*>')
_LOGO = re.compile(r'src="https?://great-expectations-web-assets[^"]*/(logo-long\.png)[^"]*"')


def localize_data_docs(site_dir: str | Path) -> int:
    """Rewrite every page of the Data Docs site under `site_dir` to local assets; return pages changed."""
    site = Path(site_dir)
    if not (site / "index.html").is_file():
        return 0
    vendor = site / VENDOR_DIR
    if not vendor.is_dir() or _stale(vendor):
        shutil.copytree(VENDORED, vendor, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    changed = 0
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        if "://" not in html:
            continue
        new = localize_page(html, os.path.relpath(site, page.parent))
        if new != html:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def localize_page(html: str, to_site: str) -> str:
    """One page: CDN asset tags -> vendored files (`to_site` is the relative path to the site root)."""
    draws_charts = "vegaEmbed(" in html

    def asset(url: str) -> str | None:
        """The page-relative local path, "" to drop the tag, None to leave it alone."""
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if name in VEGA:
            if draws_charts:  # not vendored (~1 MB); none of our suites draws a chart
                logger.warning("Data Docs page draws a chart: Vega still loads from its CDN")
                return None
            return ""
        if name not in LOCAL:
            return None
        local = LOCAL[name]
        return "" if local is None else f"{to_site}/{VENDOR_DIR}/{local}"

    def script(m: re.Match) -> str:
        path = asset(m.group(1))
        if path is None:
            return m.group(0)
        return f'<script src="{path}"></script>' if path else ""

    def stylesheet(m: re.Match) -> str:
        if "stylesheet" not in m.group(0):
            return m.group(0)
        path = asset(m.group(1))
        if path is None:
            return m.group(0)
        # integrity/crossorigin dropped: a crossorigin request for a file:// url is refused
        return f'<link rel="stylesheet" href="{path}">' if path else ""

    html = _SCRIPT.sub(script, html)
    html = _STYLESHEET.sub(stylesheet, html)
    return _LOGO.sub(lambda m: f'src="{to_site}/static/images/{m.group(1)}"', html)


def _stale(vendor: Path) -> bool:
    """A vendored file is missing from the site (a site built before this version)."""
    files = (f for f in VENDORED.rglob("*") if f.is_file() and f.name != "README.md")
    return any(not (vendor / f.relative_to(VENDORED)).is_file() for f in files)
