"""Guidelines markdown -> HTML with no raw HTML passed through.

markdown-it-py (CommonMark) with `html` off escapes any tag in the source, and its link validator drops
`javascript:`, `vbscript:`, `file:` and non-image `data:` URLs, so the output is safe to insert into the
page even when the guidelines come from an untrusted task file. Prompts and responses are not rendered
at all: the page puts them in with `textContent`, so reviewers judge exactly the characters the model
produced.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt


@lru_cache(maxsize=1)
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@lru_cache(maxsize=256)  # the same few guidelines are rendered on every request
def render_markdown(text: str) -> str:
    return _renderer().render(text)
