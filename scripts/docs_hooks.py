"""mkdocs hooks (mkdocs.yml: ``hooks``).

- API page: the docstrings are written for Sphinx-like readers; their roles become plain code
  (``:func:`~crystalzoo.graphs.collate``` → ``collate``) and ``Example::`` becomes ``Example:``.
- Notebooks: mkdocs-jupyter leaves links such as ``embeddings.md`` as they are; they are turned
  into the pages' URLs here (a link to a missing page is a warning, so ``--strict`` fails).
"""

import logging
import re

log = logging.getLogger("mkdocs.hooks.docs_hooks")

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")
_MD_LINK = re.compile(r'href="(?![a-z]+:|/|#)([^"#]+\.md)(#[^"]*)?"')


def _code(match: re.Match) -> str:
    name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
    return f"<code>{name}</code>"


def on_page_content(html: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri == "api.md":
        return _ROLE.sub(_code, html).replace("::</p>", ":</p>")
    if page.file.src_uri.endswith(".ipynb"):
        def url(match: re.Match) -> str:
            target = files.get_file_from_path(match.group(1))
            if target is None:
                log.warning("%s links to %s, which is not a page of the docs", page.file.src_uri, match.group(1))
                return match.group(0)
            return f'href="{target.url_relative_to(page.file)}{match.group(2) or ""}"'

        return _MD_LINK.sub(url, html)
    return html
