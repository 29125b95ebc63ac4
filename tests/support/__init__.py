"""What the tests share: real services, fakes wired up, messages shaped as the pipeline makes
them, and waiting for the pipeline; one of each."""
