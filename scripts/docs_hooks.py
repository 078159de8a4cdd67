"""mkdocs hook (mkdocs.yml: ``hooks``): the docstrings are written for Sphinx-like readers, so on
the API page turn their roles into plain code (``:func:`~crystalzoo.graphs.collate``` →
``collate``) and ``Example::`` into ``Example:``."""

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
    return f"<code>{name}</code>"


def on_page_content(html: str, page, **kwargs) -> str:
    if page.file.src_uri != "api.md":
        return html
    return _ROLE.sub(_code, html).replace("::</p>", ":</p>")
