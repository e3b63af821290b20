from tests.fakes.fixtures import fake_anthropic, fake_openai, fake_website  # noqa: F401
