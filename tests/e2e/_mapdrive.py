"""Driving Explore's density map (lcdash.mapview) in a browser: wait until it is drawn, and lasso a
region given in data coordinates. Shared by tests/e2e/test_density_map.py and
bench/million_map_bench.py."""

from __future__ import annotations

#: Explore's density map is drawn: its layout image is in the DOM and the sample trace holds `n` points.
DENSITY_DRAWN_JS = """(n) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const imgs = el._fullLayout && el._fullLayout.images;
    if (!imgs || !imgs.length || !el._fullData || !el._fullData.length) continue;
    const drawn = el.querySelector('.layer-below image, .imagelayer image, image');
    if (drawn && el._fullData[0].x && el._fullData[0].x.length >= n) return true;
  }
  return false;
}"""

#: The density chart's axis ranges [x0, x1, y0, y1].
RANGES_JS = """() => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (el._fullLayout && el._fullLayout.images && el._fullLayout.images.length) {
      const xa = el._fullLayout.xaxis.range, ya = el._fullLayout.yaxis.range;
      return [xa[0], xa[1], ya[0], ya[1]];
    }
  }
  return null;
}"""


def density_chart(page):
    """The drag surface of the density chart (the plotly chart that has a layout image)."""
    charts = page.locator(".js-plotly-plot")
    for i in range(charts.count()):
        el = charts.nth(i)
        if el.evaluate("el => !!(el._fullLayout && el._fullLayout.images && el._fullLayout.images.length)"):
            return el.locator(".nsewdrag").first
    raise AssertionError("no density map on the page")


def lasso_data(page, xs, ys, steps: int = 8) -> None:
    """Drag a lasso through the data-coordinate vertices (xs[i], ys[i]) (closed back to the first) on
    the density chart; the axes' ranges map data to the plot area."""
    x0, x1, y0, y1 = page.evaluate(RANGES_JS)
    drag = density_chart(page)
    drag.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = drag.bounding_box()

    def px(x, y):
        return (box["x"] + box["width"] * (x - x0) / (x1 - x0),
                box["y"] + box["height"] * (1 - (y - y0) / (y1 - y0)))

    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)  # arm plotly
    page.wait_for_timeout(200)
    pts = [px(x, y) for x, y in zip(xs, ys, strict=True)]
    page.mouse.move(*pts[0], steps=5)
    page.mouse.down()
    for p in [*pts[1:], pts[0]]:
        page.mouse.move(*p, steps=steps)
    page.mouse.up()
