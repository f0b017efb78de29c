"""The web console and the customer widget: pages, templates and vendored static files."""
