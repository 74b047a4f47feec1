"""Sphinx configuration of the documentation site.

Build it from the repository root (warnings are errors, as in ``.ci/run``)::

    pip install -e ".[docs]" && python -m sphinx -W -b html docs docs/_build/html

The pages are MyST markdown (``*.md``); the API reference (``api.rst``) is generated from the
docstrings (Google style, read by ``napoleon``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sphinx.application import Sphinx

# Document the checkout these pages sit in, whichever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "optuna-biotune"
author = "optuna-biotune developers"
copyright = "optuna-biotune developers, MIT licence"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Links to a section of another page: [text](page.md#section-title).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "optuna-biotune"
html_theme_options = {
    "description": "BioTune as an Optuna sampler and objective",
    "page_width": "1180px",  # room for the 99-column code blocks and the wide tables
}

# A relative link to a file of the repository outside docs/ ([text](../benchmarks/...)) is a
# link to that file where the markdown is read as it stands (on a forge, in an editor); MyST
# would look for a page of the site instead. Here it becomes a download of the file (images,
# ![alt](path), are left to Sphinx, which copies them into the site).
_LINK = re.compile(r"(?<!!)(\[[^\]]*\])\((?!path:)([^()\s#]+)((?:#[^()\s]*)?)\)")


def _outside_links_as_downloads(app: Sphinx, docname: str, source: list[str]) -> None:
    if not str(app.env.doc2path(docname)).endswith(".md"):
        return
    srcdir = Path(app.srcdir).resolve()
    here = Path(app.env.doc2path(docname)).parent

    def link(match: re.Match[str]) -> str:
        target = (here / match.group(2)).resolve()
        if target.is_file() and not target.is_relative_to(srcdir):
            return f"{match.group(1)}(path:{match.group(2)})"
        return match.group(0)

    source[0] = _LINK.sub(link, source[0])


def setup(app: Sphinx) -> None:
    app.connect("source-read", _outside_links_as_downloads)
