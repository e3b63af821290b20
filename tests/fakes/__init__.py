"""Local fake servers for tests: a small website, LLM/embedding APIs, TLS helpers.

Everything binds to 127.0.0.1 on a random port and is an async context manager, so a test
never touches the internet and never needs a fixed port. Pytest fixtures wrapping them live
in ``tests.fakes.fixtures``; import them into the test module that uses them.
"""
