"""The citizens' web pages of HQ (and the layout the admin console shares): server-rendered
Jinja2 templates, Babel catalogs in five languages, strict CSP, CSRF on every form.

Imported only by HQ (hq.app calls :func:`hq.pages.app.setup_pages`). docs/web.md describes it.
"""
