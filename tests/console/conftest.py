"""Console tests: cookie-keeping HTTP clients (`support.console`); the browser is `support.browser`'s."""
from support.console import console_client  # noqa: F401 (fixtures)
