"""The suite's own test modules, run by :mod:`durable_workflows_conformance.cli`."""
