"""Default "existing materials" for the third UltraChat-style sector.

Cuts the prose of the stdlib's bundled documentation topics
(``pydoc_data.topics.topics``) into 300-1200 character passages.
Deterministic: topics in sorted order, paragraphs in document order.
Skips headings, indented blocks (code, grammar, tables), definition and
list items, footnotes and version notes; merges adjacent prose paragraphs
of one section up to ``max_chars``; drops duplicates (topics overlap).
"""
import re

_SKIP = ("Changed in", "Added in", "New in", "Deprecated", "See also",
         "Note:", "-[", "[", "*", "+", "|", "-")
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")


def _is_prose(lines: list[str], para: str) -> bool:
    return (para[:1].isupper() and not para.startswith(_SKIP)
            and not any(ln.startswith(" ") for ln in lines)
            and not re.match(r"\d+\. ", para) and "::=" not in para
            and para.endswith((".", ":", ")")) and ". " in para + " ")


def passages_from_pydoc(max_chars: int = 1200, min_chars: int = 300) -> list[dict]:
    """Return [{"title", "text"}] prose passages from pydoc_data topics."""
    from pydoc_data.topics import topics

    out: list[dict] = []
    seen: set[str] = set()
    for key in sorted(topics):
        title, buf = key, []

        def flush() -> None:
            while buf and buf[-1].endswith(":"):  # lead-in to a dropped block
                buf.pop()
            text = " ".join(buf)
            if min_chars <= len(text) <= max_chars and text not in seen:
                seen.add(text)
                out.append({"title": title, "text": text})
            buf.clear()

        for raw in re.split(r"\n\s*\n", topics[key]):
            lines = raw.strip("\n").splitlines()
            if len(lines) == 2 and _UNDERLINE.match(lines[1].strip()):
                flush()
                title = lines[0].strip()
                continue
            para = re.sub(r"\s+", " ", re.sub(r" ?\[\d+\]", "", raw)).strip()
            if not lines or not _is_prose(lines, para) or len(para) > max_chars:
                flush()  # passages stay contiguous: dropped blocks break them
                continue
            if buf and len(" ".join(buf)) + 1 + len(para) > max_chars:
                flush()
            buf.append(para)
        flush()
    return out
