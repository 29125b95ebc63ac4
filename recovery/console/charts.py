"""Small bar charts drawn on the server as SVG: no script, no external asset, and readable to a
screen reader through the title and the figures beside them."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH = 192
HEIGHT = 32


def bars(counts: list[int], label: str) -> Markup:
    """One bar per count, oldest left; the tallest bar fills the height."""
    if not counts:
        return Markup("")
    top = max(*counts, 1)
    step = WIDTH / len(counts)
    shapes = []
    for i, n in enumerate(counts):
        if n == 0:
            continue
        h = max(1.0, HEIGHT * n / top)
        shapes.append(
            f'<rect x="{i * step:.1f}" y="{HEIGHT - h:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{n:,}</title></rect>'
        )
    title = escape(label)
    return Markup(  # noqa: S704 - every value in it is a number or escaped
        f'<svg class="bars" role="img" aria-label="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}"><title>{title}</title>{"".join(shapes)}</svg>'
    )
