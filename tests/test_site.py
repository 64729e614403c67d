"""The web edition: build the site from the committed notebooks, then read it in a browser.

The build runs the README's command (Sphinx, myst-nb, sphinx-book-theme; nothing executed).
The browser part opens every page in headless Chromium (Debian's ``chromium``, driven by
Playwright's Python API) with every request that does not go to the local server aborted, and
checks each chapter's title, rendered math, loaded images, internal links and the console.
It is skipped, with the reason, where the docs extra or Chromium is not installed
(``python -m pip install -e ".[docs]"``; ``apt-get install -y chromium``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docs" / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
# The README's build command, from the repository root.
BUILD_COMMAND = ["-m", "sphinx", "-b", "html", "-c", "docs", "-d", "docs/_build/doctrees"]
BUILD_COMMAND += [".", "docs/_build/html"]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
# Chromium's flags for a machine without a network (no background requests to Google).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# TeX left as text in a page's prose means MathJax did not render it.
RAW_TEX = re.compile(r"\$\$|\\(?:frac|begin|end|mathbb|mathrm|sqrt|sum|alpha|gamma|lambda)\b|\\\(")

# Playwright's waits (30 s by default) are far longer than a page needs; this allows for a
# machine shared with other work.
TIMEOUT_MS = 300_000
PLAIN_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")

pytestmark = pytest.mark.slow


def page_of(notebook: Path) -> Path:
    return HTML / notebook.relative_to(ROOT).with_suffix(".html")


def notebook_title(notebook: Path) -> str:
    """The chapter's title: the first Markdown heading, with inline math as plain letters."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            match = re.search(r"^# (.+)$", source, re.MULTILINE)
            if match:
                return match.group(1).replace("$", "").strip()
    raise AssertionError(f"{notebook.name}: no '# ' title in any Markdown cell")


@pytest.fixture(scope="module")
def site() -> Path:
    """Builds the site afresh into docs/_build/html with the README's command."""
    for module in ("sphinx", "myst_nb", "sphinx_book_theme"):
        pytest.importorskip(
            module, reason="the web edition needs the docs extra: pip install -e '.[docs]'"
        )
    if os.environ.get("DNBOOK_SITE_REUSE") and (HTML / "index.html").is_file():
        return HTML  # a developer's shortcut: test the site built last time
    shutil.rmtree(HTML, ignore_errors=True)
    shutil.rmtree(BUILD / "doctrees", ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *BUILD_COMMAND], cwd=ROOT, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"the site's build failed:\n{result.stderr[-5000:]}"
    size = sum(p.stat().st_size for p in HTML.rglob("*") if p.is_file())
    print(f"\nsite built in {seconds:.1f} s: {HTML} ({size / 2**20:.1f} MiB)")
    (BUILD / "build-warnings.txt").write_text(result.stderr, encoding="utf-8")
    return HTML


def test_build_warns_about_no_chapter_or_page_of_the_site(site):
    """Warnings located in the notebooks or docs/ fail; docstring warnings are listed."""
    lines = (BUILD / "build-warnings.txt").read_text(encoding="utf-8").splitlines()
    warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
    ours = [w for w in warnings if "/notebooks/" in w or "/docs/" in w or not w.startswith("/")]
    others = [w for w in warnings if w not in ours]
    if others:
        print("warnings from docstrings:\n" + "\n".join(others))
    assert not ours, "the site's build warned:\n" + "\n".join(ours)


def test_every_notebook_is_a_page_that_links_its_ipynb(site):
    assert len(NOTEBOOKS) >= 13, f"expected the book's notebooks, found {len(NOTEBOOKS)}"
    for notebook in NOTEBOOKS:
        page = page_of(notebook)
        assert page.is_file(), f"no page for {notebook.relative_to(ROOT)}"
        copy = site / "_sources" / notebook.relative_to(ROOT)
        assert copy.read_bytes() == notebook.read_bytes(), f"{copy} differs from the notebook"
        html = page.read_text(encoding="utf-8")
        link = os.path.relpath(copy, page.parent).replace(os.sep, "/")
        assert f'href="{link}"' in html, f"{page.name} does not link {link}"
        assert "dnbook-banner" in html, f"{page.name} has no banner"


def test_no_page_loads_anything_from_the_network(site):
    """Scripts, styles, images and fonts come from the build: no http(s) or // address."""
    remote = re.compile(
        r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//", re.I
    )
    css_remote = re.compile(r"(?:url\(|@import)\s*[\"']?(?:https?:)?//", re.I)
    offenders = [
        str(p.relative_to(site))
        for p in [*site.rglob("*.html"), *site.rglob("*.css")]
        if (remote if p.suffix == ".html" else css_remote).search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"pages that load from the network: {offenders}"
    chapter = page_of(ROOT / "notebooks" / "05_dynamic_normalization.ipynb")
    assert 'src="../_static/mathjax/tex-chtml.js"' in chapter.read_text(encoding="utf-8")
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_api_reference_has_the_layers_and_their_equations(site):
    page = site / "docs" / "api" / "dnbook.norms.dynamic.html"
    html = page.read_text(encoding="utf-8")
    assert 'id="dnbook.norms.dynamic.DynamicNorm2d"' in html
    assert html.count('class="math') >= 3, "the docstring's equations are not math nodes"
    assert ">Shape<" in html and ">Parameters" in html  # napoleon's sections


class _Ids(HTMLParser):
    """The ids (and anchor names) of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


@functools.cache
def ids_of(page: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(page.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


def broken(href: str, base: str) -> str | None:
    """Why a link into the site (absolute, under ``base``) is broken, or None."""
    url, fragment = urldefrag(href)
    path = unquote(urlsplit(url).path)[len(urlsplit(base).path) :]
    target = HTML / path
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return "no such file"
    if fragment and target.suffix == ".html" and unquote(fragment) not in ids_of(target):
        return f"no id {fragment!r} in {target.relative_to(HTML)}"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A page closed while a file was still being sent: not the site's fault.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def browser(site):
    playwright_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the browser test needs Playwright's Python API: pip install -e '.[docs]'",
    )
    chromium = os.environ.get("DNBOOK_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        pytest.skip("no Chromium to test the site in: apt-get install -y chromium")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        yield instance, f"http://127.0.0.1:{server.server_address[1]}/"
        instance.close()
    server.shutdown()


# Runs in the page after it has loaded: waits for MathJax, loads every image, and reports.
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const prose = document.body.cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, textarea, mjx-container, .headerlink")
    .forEach(node => node.remove());
  const math = Array.from(document.querySelectorAll(".math"));
  return {
    title: document.title,
    h1: Array.from(document.querySelectorAll("h1")).map(h => h.textContent.trim()),
    text: prose.textContent,
    math: math.length,
    unrendered: math.filter(m => !m.querySelector("mjx-container")).length,
    tex_errors: document.querySelectorAll("mjx-merror").length,
    broken_images: images.filter(img => !img.complete || img.naturalWidth === 0)
      .map(img => img.getAttribute("src")),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    sidebar: Array.from(document.querySelectorAll("nav.bd-docs-nav a[href]"))
      .map(a => a.href.split("#")[0]),
  };
}"""


def watch(page, name: str, problems: list[str]) -> None:
    """Adds to ``problems`` each console error, script error and failed response of a page."""

    def console(message):
        if message.type == "error":
            problems.append(f"{name}: console error: {message.text}")

    def response(answer):
        if answer.status >= 400:
            problems.append(f"{name}: HTTP {answer.status} for {answer.url}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"{name}: script error: {error}"))
    page.on("response", response)


def code_toggle_problems(page, name: str) -> list[str]:
    """The banner's button hides every code cell's source, and a second click shows it."""
    visible = "() => Array.from(document.querySelectorAll('div.cell_input'))"
    visible += ".filter(e => e.offsetParent !== null).length"
    before = page.evaluate(visible)
    button = page.locator("button.dnbook-toggle-code")
    button.click()
    hidden = page.evaluate(visible)
    button.click()
    after = page.evaluate(visible)
    if not (before > 0 and hidden == 0 and after == before):
        return [f"{name}: code cells shown {before}, after hiding {hidden}, after showing {after}"]
    return []


def test_every_page_reads_right_in_a_browser_without_network(site, browser):
    instance, base = browser
    context = instance.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    remote: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(base):
            request_route.continue_()
        else:
            remote.append(url)
            request_route.abort()

    context.route("**/*", route)
    # Every page (the theme's _static/*.html are template fragments, not pages).
    pages = sorted(p for p in site.rglob("*.html") if not {"_sources", "_static"} & set(p.parts))
    titles = {page_of(nb): notebook_title(nb) for nb in NOTEBOOKS}
    links: dict[str, set[str]] = {}
    start = time.perf_counter()
    for path in pages:
        name = str(path.relative_to(site))
        page = context.new_page()
        watch(page, name, problems)
        page.goto(base + name, wait_until="load")
        if name == "index.html":  # the site's root forwards to the front page
            page.wait_for_url(base + "docs/index.html")
            page.wait_for_load_state("load")
        seen = page.evaluate(INSPECT)
        if path in titles:
            expected = titles[path]
            seen["title"] = seen["title"].translate(PLAIN_QUOTES)  # Sphinx's smart quotes
            seen["h1"] = [h.translate(PLAIN_QUOTES) for h in seen["h1"]]
            if not seen["title"].startswith(expected):
                problems.append(f"{name}: title {seen['title']!r}, expected {expected!r}")
            if not any(h.startswith(expected[:20]) for h in seen["h1"]):
                problems.append(f"{name}: no heading {expected!r} (headings: {seen['h1']})")
            missing = {base + str(p.relative_to(site)) for p in titles} - set(seen["sidebar"])
            if missing:
                problems.append(f"{name}: the sidebar lacks {sorted(missing)}")
        raw = sorted(set(RAW_TEX.findall(seen["text"])))
        if raw:
            problems.append(f"{name}: TeX left as text: {raw}")
        if seen["unrendered"] or seen["tex_errors"]:
            problems.append(
                f"{name}: {seen['unrendered']} of {seen['math']} math elements not rendered, "
                f"{seen['tex_errors']} TeX errors"
            )
        problems += [f"{name}: image not loaded: {src}" for src in seen["broken_images"]]
        for href in seen["links"]:
            if href.startswith(base):
                links.setdefault(href, set()).add(name)
        if name in ("docs/index.html", "notebooks/05_dynamic_normalization.html"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / ("front.png" if name.startswith("docs") else "chapter05.png")
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            if name.startswith("notebooks"):
                problems += code_toggle_problems(page, name)
                page.locator("#the-two-equations").scroll_into_view_if_needed()
                shot = SCREENSHOTS / "chapter05_equations.png"
                page.screenshot(path=str(shot))
                print(f"screenshot: {shot}")
        page.close()
    seconds = time.perf_counter() - start
    for href, sources in sorted(links.items()):
        why = broken(href, base)
        if why:
            problems.append(f"broken link {href} ({why}) on {sorted(sources)[:3]}")
    context.close()
    print(f"{len(pages)} pages read in Chromium in {seconds:.1f} s, {len(links)} links checked")
    problems += [f"request outside the site (blocked): {url}" for url in sorted(set(remote))]
    assert set(titles) <= set(pages), "a notebook has no page"
    (BUILD / "browser-problems.txt").write_text("\n".join(problems), encoding="utf-8")
    listed = BUILD / "browser-problems.txt"
    assert not problems, f"{len(problems)} problems (all in {listed}):\n" + "\n".join(problems[:60])
