"""Command-line tools: `make run`, `make redis`, `make evaluate` and the Procfile runner."""
