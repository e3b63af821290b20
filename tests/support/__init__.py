"""What tests share: fixtures, factories, fakes of outside services, waits. Imported as
`support.<module>` (tests/ is on pythonpath); tests never import each other or a conftest.

Plugins (tests/conftest.py registers them, so every test can name their fixtures):
  database  the run's PostgreSQL (pytest-postgresql), the migrated template, `settings` (a fresh
            copy per test), `owner_conn`
  server    `server`, `server_thread`, `start_server`, `make_settings`
  accounts  `signup`, `make_api_key` through the API
  rows      `rows` (tenants, members, chatbots, conversations, messages made in SQL),
            `sql_tenant`, `tenant_conn` (a rolled-back parley_app transaction bound to a tenant)
  browser   the one chromium: `browser`, `context`, `page`, `widget_page`, `widget_build`
  embedder  `local_embedder`
  fakes.fixtures  fake website, LLM APIs, the widget's protocol double
Per area (a directory's conftest.py picks them): workspace (`ws`, `make_workspace`), realtime
(`tenant`, WebSocket/SSE clients), knowledge (`tenant`), assistant, console, outbox, billing.
Helpers: waits (blocked on a lock, notifications delivered, a condition; never sleep, then assert).
"""
