"""The built documentation site, opened in headless Chromium (Debian's package): every page renders with
its text and its images, and the API reference lists the pinned names. Run by ``nox -s docs`` after
``mkdocs build --strict`` (``SITE``: the built site's folder)."""

import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import threading

import pytest

SITE = pathlib.Path(os.environ.get("SITE", "site")).resolve()
HARNESS = """<html><body><script>
async function visit(url) {
  const frame = document.createElement("iframe");
  frame.src = url;
  const loaded = new Promise(resolve => { frame.onload = resolve; });
  document.body.appendChild(frame);
  await loaded;
  const page = frame.contentDocument;
  const images = [...page.images].filter(image => !image.src.startsWith("data:"));
  await Promise.all(images.map(image => image.complete ? null
    : new Promise(resolve => { image.onload = image.onerror = resolve; })));
  return {url, title: page.title, text: page.body.innerText,
          images: images.map(image => [image.getAttribute("src"), image.naturalWidth])};
}
(async () => {
  const pages = PAGES;
  const results = [];
  for (const url of pages) results.push(await visit(url));
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
})();
</script></body></html>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("no Chromium: apt-get install chromium (the docs session opens the site in it)")


@pytest.fixture(scope="module")
def rendered():
    """Every page of the site as Chromium rendered it: its title, visible text and images' widths."""
    assert (SITE / "index.html").is_file(), f"no built site in {SITE}: run mkdocs build first"
    pages = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("index.html"))
    pages = [p for p in pages if not p.startswith(("search/", "assets/"))]
    (SITE / "_rendered.html").write_text(HARNESS.replace("PAGES", json.dumps(["/" + p for p in pages])))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *args: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=60000",
                "--dump-dom",
                f"http://127.0.0.1:{server.server_address[1]}/_rendered.html",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    finally:
        server.shutdown()
        (SITE / "_rendered.html").unlink()
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert match, dom[-2000:]
    import html

    return {r["url"]: r for r in json.loads(html.unescape(match.group(1)))}


def test_every_page_renders_with_its_text_and_images(rendered):
    assert len(rendered) >= 15
    for url, page in rendered.items():
        assert page["title"] and len(page["text"]) > 200, url
        broken = [src for src, width in page["images"] if width == 0]
        assert not broken, (url, broken)
    assert any(page["images"] for page in rendered.values())  # the pictures are there


def test_the_api_reference_lists_the_pinned_names(rendered):
    reference = " ".join(page["text"] for url, page in rendered.items() if url.startswith("/reference/"))
    for name in ("WGANGP", "gradient_penalty", "distribute", "input_gradient"):
        assert name in reference, name


def test_the_cli_reference_is_the_parser_s_help(rendered):
    text = rendered["/cli-reference/index.html"]["text"]
    for flag in ("--checkpoint-every", "--steps-per-execution", "--out", "Lipschitz constraint"):
        assert flag in text
