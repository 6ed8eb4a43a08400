# The two commands of the README. Each runs the bootstrap first, so a fresh machine needs nothing else.
.PHONY: bootstrap demo test

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python examples/demo.py

test: bootstrap
	.venv/bin/python -m pytest
