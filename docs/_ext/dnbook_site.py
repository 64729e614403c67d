"""What the web edition adds to myst-nb and sphinx-book-theme.

- MathJax 3 served from the build: the files come from the PyPI package
  ``sphinx-mathjax-offline`` (MathJax 3.2.2) and only what a page can load is copied (the TeX
  to CHTML bundle, its TeX extensions, fonts and menu), so no page fetches anything from a CDN.
- A banner right under each notebook's title: which committed notebook the page shows (nothing is
  re-executed), a link to the ``.ipynb`` file in the site, a button that hides every code
  cell, and the profile line the chapter printed, if it prints one.
- A page's ``<title>`` (the browser tab) shows a title's inline math as its plain TeX
  letters, not as ``\\(r\\)``.
- Long code cells (more than ``FOLD_LINES`` lines: mostly plotting) start folded; a click
  unfolds them.

The notebooks are read from their place in ``notebooks/``; the changes are made to the text
Sphinx reads (the ``source-read`` event), never to the files.
"""

from __future__ import annotations

import json
import posixpath
import re
from importlib import metadata
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.fileutil import copy_asset

# A code cell with more lines than this starts folded (about 1 in 10 cells of the book).
FOLD_LINES = 40

MATHJAX_DIST = "sphinx-mathjax-offline"
# What tex-chtml.js loads at run time, relative to the MathJax folder.
MATHJAX_FILES = ("tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y")

PROFILE_LINE = re.compile(r"^profile\b.*$", re.MULTILINE)
INLINE_MATH = re.compile(r"\\\((.*?)\\\)")


def mathjax_source() -> Path:
    """The MathJax folder inside the installed ``sphinx-mathjax-offline`` package."""
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError:
        raise ExtensionError(
            f"the web edition needs MathJax from the package {MATHJAX_DIST!r}, which is not "
            "installed: run python -m pip install -e '.[docs]'"
        ) from None
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (folder / "tex-chtml.js").is_file():
        raise ExtensionError(f"expected MathJax's tex-chtml.js in {folder}, found none")
    return folder


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    for name in MATHJAX_FILES:
        if (source / name).is_dir():
            copy_asset(source / name, target / name)
        else:
            copy_asset(source / name, target)


def profile_line(notebook: dict) -> str | None:
    """The first ``profile ...`` line a code cell of the notebook printed, if any."""
    for cell in notebook["cells"]:
        for output in cell.get("outputs", ()):
            if output.get("output_type") != "stream":
                continue
            text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
            match = PROFILE_LINE.search(text)
            if match:
                return match.group(0).strip()
    return None


def banner(docname: str, notebook: dict) -> str:
    """The Markdown cell placed under a notebook's title."""
    path = f"{docname}.ipynb"
    depth = docname.count("/")
    href = posixpath.join(*([".."] * depth), "_sources", path)
    lines = [
        ":::{admonition} About this page",
        ":class: note dnbook-banner",
        "",
        f"This page shows `{path}` with the outputs committed in it: nothing was executed to "
        f'build it. <a class="dnbook-notebook-link" href="{href}" download>Open the notebook '
        f"(`{posixpath.basename(path)}`)</a> to run it yourself (chapter 0 sets up the "
        "environment).",
        "",
        '<button type="button" class="dnbook-toggle-code">Hide all code</button>',
    ]
    if "/solutions/" not in f"/{docname}":
        profile = profile_line(notebook)
        if profile is None:
            lines += ["", "The chapter does not print the profile its outputs were made at."]
        else:
            lines += ["", f"The chapter's outputs were made at: `{profile}`"]
    lines.append(":::")
    return "\n".join(lines)


def adapt_notebook(app: Sphinx, docname: str, source: list[str]) -> None:
    """Add the banner and fold long code cells, in the text Sphinx reads (not the file)."""
    if not docname.startswith("notebooks/") or not str(app.env.doc2path(docname)).endswith(
        ".ipynb"
    ):
        return
    notebook = json.loads(source[0])
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if len(text.splitlines()) > FOLD_LINES and "hide-input" not in tags:
            tags.append("hide-input")
    first, *rest = split_title(notebook["cells"][0])
    banner_cell = {"cell_type": "markdown", "metadata": {}, "source": banner(docname, notebook)}
    notebook["cells"][:1] = [first, banner_cell, *rest]
    source[0] = json.dumps(notebook)


def split_title(cell: dict) -> list[dict]:
    """A first Markdown cell ``# Title`` + text as two cells, so the banner fits between."""
    text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    title, _, rest = text.lstrip().partition("\n")
    if cell["cell_type"] != "markdown" or not title.startswith("# ") or not rest.strip():
        return [cell]
    return [
        {"cell_type": "markdown", "metadata": cell.get("metadata", {}), "source": title},
        {"cell_type": "markdown", "metadata": {}, "source": rest.strip("\n")},
    ]


def plain_title(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """A browser tab shows ``<title>`` as text: ``\\(r\\)`` there becomes ``r``."""
    if context.get("title"):
        context["title"] = INLINE_MATH.sub(r"\1", context["title"])


def setup(app: Sphinx) -> dict:
    # MathJax on every page: the sidebar's chapter titles hold math (chapter 9's r and g).
    app.set_html_assets_policy("always")
    app.connect("source-read", adapt_notebook)
    app.connect("html-page-context", plain_title)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
