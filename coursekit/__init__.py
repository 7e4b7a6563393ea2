"""Tooling for the "classifier from scratch" course kit: MNIST provisioning, grading, command line."""
