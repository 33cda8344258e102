"""What a page loads must come from the portal itself: it has to work on a closed network.

Looking for the word "cdn" in a page is not that check (a random CSRF token contains it now
and then); this reads every element that makes the browser fetch something and asks that its
address stay on the portal's own origin.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

# The elements and attributes a browser fetches on its own while rendering (links a person
# clicks, <a href>, are not assets).
_FETCHED = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
}


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.addresses: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in _FETCHED.get(tag, ()):
                if name == "srcset":
                    self.addresses += [part.split()[0] for part in value.split(",") if part.strip()]
                else:
                    self.addresses.append(value)


def fetched_addresses(page: str) -> list[str]:
    """Every address the page makes a browser fetch while rendering it."""
    parser = _Assets()
    parser.feed(page)
    return parser.addresses


def assert_only_own_assets(page: str) -> None:
    """No script, stylesheet, image or frame from another host (a CDN, a font service)."""
    addresses = fetched_addresses(page)
    assert addresses, "the page loads nothing: not the page this check was meant for"
    # data: addresses are inline content, nothing is dialled for them
    foreign = [a for a in addresses if (urlsplit(a).scheme not in ("", "data")) or urlsplit(a).netloc]
    assert not foreign, f"assets from elsewhere: {foreign}"
