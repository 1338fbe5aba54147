"""MkDocs hooks: pages made from what the code and the repository already say, never written twice.

- ``index.md``: the README (the landing page), its links made relative to ``docs/``;
- ``cli-reference.md``: every command's ``--help``, from the argparse parser of `portable_wgangp.cli`;
- ``benchmarks.md``: ``benchmarks/README.md``, its links to result files shown as file names.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).parent


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "index.md":
        readme = (ROOT / "README.md").read_text()
        readme = readme.replace("](docs/", "](").replace("](benchmarks/README.md", "](benchmarks.md")
        return markdown.replace("{{ readme }}", readme)
    if page.file.src_uri == "cli-reference.md":
        return markdown.replace("{{ cli_reference }}", cli_reference())
    if page.file.src_uri == "benchmarks.md":
        text = (ROOT / "benchmarks" / "README.md").read_text()
        text = re.sub(r"\[([^\]]+)\]\((?!https?:)[^)#]+\.json\)", r"`\1`", text)  # result files: names
        return markdown.replace("{{ benchmarks_readme }}", text.split("\n", 1)[1])
    return markdown


def cli_reference() -> str:
    import argparse

    from portable_wgangp import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    sections = [f"```text\n{parser.format_help()}```"]
    for name, command in commands.items():
        sections.append(f"## {name}\n\n```text\n{command.format_help()}```")
    return "\n\n".join(sections)
