"""Local fake servers for tests: a small website, LLM/embedding APIs, TLS helpers, and the
protocol double (a stand-in Parley server for the widget).

Everything binds to 127.0.0.1 on a random port, so a test never touches the internet and never
needs a fixed port. Pytest fixtures wrapping them are in ``support.fakes.fixtures`` (a plugin:
any test can name them).
"""
