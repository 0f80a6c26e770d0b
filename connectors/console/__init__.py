"""The web console served by the HTTP edge at `/console`: accounts, usage, bills and
their Stripe sync, dead letters and health, for the people who run billing.

Pages are rendered on the server (Jinja2 templates, inline SVG charts) from the edge's
own JSON API, called in-process with the API key the user logged in with; a small
script only refreshes live figures. Every asset ships in this package: no CDN, no build.

- `kafka_reads`: read models the console needs that the edge did not keep (accounts and
  plans from the worker's table changelogs, the catalog, the Stripe sync ledger), the
  tail of the dead-letter topics, consumer lag;
- `api`: the JSON read routes built on them (`/organizations/{orgId}/...`);
- `session`: the signed session cookie that holds the API key;
- `pages`: the page handlers; `chart` and `export`: the SVG chart and the CSV export.
"""
