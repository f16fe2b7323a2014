"""The dashboard: server-rendered pages (Jinja2) with a little JS, served by `fineloop serve`."""
