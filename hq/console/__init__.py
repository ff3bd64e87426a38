"""The HQ console (issue 10): admins, managers and staff run SmartQ from a browser.

Server-rendered like the citizens' pages (hq/pages): the same layout, languages, CSRF and
security headers; the console adds its own navigation shaped by role (docs/console.md).
"""
