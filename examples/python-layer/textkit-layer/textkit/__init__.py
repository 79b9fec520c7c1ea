"""textkit: text helpers several functions share, published once as a layer (edgefn layer publish textkit ...)."""

import re
import unicodedata

__all__ = ["VERSION", "slugify", "title"]

VERSION = "1.0"


def slugify(text: str) -> str:
    """'Crème Brûlée: A Guide!' -> 'creme-brulee-a-guide'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def title(slug: str) -> str:
    """'creme-brulee-a-guide' -> 'Creme Brulee A Guide'."""
    return " ".join(word.capitalize() for word in slug.split("-") if word)
