"""Sphinx configuration of the course site (myst-nb + sphinx-book-theme). Built by docs/build_site.py, which copies
this file next to the executed notebooks with a run.json that says which profile, machine and date made them."""

import json
from pathlib import Path

run = json.loads((Path(__file__).parent / "run.json").read_text())

project = "Fine-tuning LLMs, measured"
author = "the course authors"
extensions = ["myst_nb", "sphinx.ext.mathjax", "sphinx-mathjax-offline"]  # MathJax copied into the site: no CDN
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # every notebook was executed once by nbmake (make notebooks / make site): never again here
nb_merge_streams = True
exclude_patterns = ["junit.xml", "run.json", "**/.ipynb_checkpoints"]
suppress_warnings = ["myst.xref_missing", "misc.highlighting_failure"]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_title = project
html_last_updated_fmt = None
html_theme_options = {
    # The banner on every page: which run produced the numbers.
    "announcement": (f"Numbers on these pages: <code>{run['profile']}</code> profile, {run['machine']}, "
                     f"{run['date']}."),
    "repository_url": f"https://github.com/{run['repository']}" if run.get("repository") else "",
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": bool(run.get("repository")),
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
}
