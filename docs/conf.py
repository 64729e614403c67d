"""Sphinx configuration of the web edition (myst-nb + sphinx-book-theme, the Jupyter Book 1 stack).

Build from the repository root (the README's web-edition section):

    python -m sphinx -b html -c docs . docs/_build/html

The source folder is the repository root, so the notebooks are read where they are
(``notebooks/``, ``notebooks/solutions/``); ``include_patterns`` limits the build to them and
``docs/``. Nothing is executed: each page shows the outputs committed in its notebook. Every
asset is served from the build (MathJax included), so the site works without a network.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # `import dnbook` from this checkout, for the API pages
sys.path.insert(0, str(DOCS / "_ext"))

project = "dnbook"
author = "the dnbook authors"
copyright = "the dnbook authors"  # noqa: A001 (Sphinx's name)
root_doc = "docs/index"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "dnbook_site",  # docs/_ext/dnbook_site.py: local MathJax, chapter banners, code folding
]

include_patterns = ["docs/**", "notebooks/**"]
# Pruned while Sphinx walks the tree (include_patterns alone does not stop the walk).
exclude_patterns = [
    "docs/_build",
    "docs/_templates",
    "docs/_static",
    "docs/_ext",
    "**/.ipynb_checkpoints",
    ".git",
    ".venv",
    "results",
    "cache",
    "data",
]
templates_path = ["_templates"]  # relative to docs/ (the configuration folder)

# --- notebooks (myst-nb) ---
# The committed notebooks have no cell ids (nbformat 4.4); nbformat warns once per notebook.
warnings.filterwarnings("ignore", message="Cell is missing an id field")
nb_execution_mode = "off"  # the committed outputs are the book's
nb_render_markdown_format = "myst"  # Markdown outputs (tables with math, links) as MyST
nb_ipywidgets_js = {}  # no widget state in the book; never load require.js from a CDN
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.mathjax"]

# --- API reference (autodoc + napoleon: the docstrings use Args:/Returns:/Shape:/Example:) ---
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "ignore-module-all": True,  # each object once, on the page of the module defining it
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # not torch's docstrings of forward/backward
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shape"]
napoleon_use_rtype = False

# --- HTML ---
html_theme = "sphinx_book_theme"
html_title = "dnbook: Dynamic Normalization, from first principles"
html_static_path = ["_static"]
html_css_files = ["dnbook.css"]
html_js_files = ["dnbook.js"]
html_sourcelink_suffix = ""  # _sources/notebooks/NN_name.ipynb keeps its name
html_copy_source = True
html_show_sphinx = False
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": True,
    "use_repository_button": False,
    "navigation_with_keys": False,
    "show_navbar_depth": 1,
}
# The theme's colour mode before a reader picks one (without it, the theme logs a console
# error on a reader's first page); light suits the notebooks' white figures.
html_context = {"default_mode": "light"}
# The build's root page (index.html) forwards to the front page, docs/index.html.
html_additional_pages = {"index": "redirect.html"}

# MathJax 3 is copied into the build by dnbook_site (not loaded from a CDN); the path is
# relative to _static/.
mathjax_path = "mathjax/tex-chtml.js"
