"""Tooling for the "classifier from scratch" course kit: MNIST provisioning, grading, command line."""

ASSIGNMENT = "classifier_from_scratch"
