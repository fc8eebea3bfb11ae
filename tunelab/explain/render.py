"""Three views of the same explanations: coloured terminal text (green: the word pushes
toward the explained output, red: away; stronger colour, larger share of the largest
|score|), plain text with scores in brackets for pipes and --no-color, JSON, and one
self-contained HTML page (inline style, no script, no external resource)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tunelab.explain.words import Explanation
from tunelab.io import write_text

_GREEN = (22, 28, 34, 40, 46)  # xterm-256 backgrounds, faint to strong
_RED = (52, 88, 124, 160, 196)


def _strength(score: float, scale: float) -> int:
    """0..4: the bucket of |score| / scale."""
    return min(4, int(abs(score) / scale * 5)) if scale > 0 else 0


def _scale(e: Explanation) -> float:
    return max((abs(w.score) for w in e.words), default=0.0)


def terminal(e: Explanation, colour: bool) -> str:
    """The text with each word coloured (or followed by its score), gaps kept as typed."""
    scale, out, at = _scale(e), [], 0
    for w in e.words:
        out.append(e.text[at:w.start])
        word = e.text[w.start:w.end]
        if colour:
            code = (_GREEN if w.score >= 0 else _RED)[_strength(w.score, scale)]
            out.append(f"\x1b[48;5;{code}m\x1b[97m{word}\x1b[0m")
        else:
            out.append(f"{word}[{w.score:+.3f}]")
        at = w.end
    out.append(e.text[at:])
    return "".join(out)


def summary(e: Explanation, top: int = 5) -> str:
    """Header line: what is explained, its probability, the top words, IG's error."""
    best = sorted(e.words, key=lambda w: -w.score)[:top]
    line = (f"{e.target} (p={e.probability:.4f}, {e.method}): top "
            + ", ".join(f"{w.word} {w.score:+.3f}" for w in best))
    if e.completeness_error is not None:
        line += f"; IG completeness error {e.completeness_error:.2e}"
    return line


def to_json(explanations: list[Explanation], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "explanations": [e.to_json() for e in explanations]},
                      indent=2, ensure_ascii=False) + "\n"


def _background(score: float, scale: float) -> str:
    alpha = min(1.0, abs(score) / scale) * 0.8 if scale > 0 else 0.0
    rgb = "0,160,60" if score >= 0 else "210,30,30"
    return f"rgba({rgb},{alpha:.3f})"


def html_fragment(e: Explanation) -> str:
    """One explanation: a header line and the text with each word shaded by its score."""
    scale, parts, at = _scale(e), [], 0
    for w in e.words:
        parts.append(html.escape(e.text[at:w.start]))
        parts.append(f'<span class="w" style="background:{_background(w.score, scale)}" '
                     f'title="{w.score:+.4f}">{html.escape(e.text[w.start:w.end])}</span>')
        at = w.end
    parts.append(html.escape(e.text[at:]))
    return (f'<div class="x"><p class="h">{html.escape(summary(e))}</p>'
            f'<p class="t">{"".join(parts)}</p></div>')


_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        ".x{border-bottom:1px solid #ddd;padding:.5rem 0}.h{color:#555;font-size:.9rem}"
        ".t{font-size:1.15rem;line-height:2}.w{padding:.1rem .15rem;border-radius:.2rem}")


def page(explanations: list[Explanation], title: str, note: str = "") -> str:
    body = "\n".join(html_fragment(e) for e in explanations)
    return (f'<!doctype html><html><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>\n{body}\n</body></html>\n")


def write_html(path: Path, explanations: list[Explanation], title: str, note: str = "") -> None:
    write_text(path, page(explanations, title, note))
