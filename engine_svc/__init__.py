"""Runs each job's phases on a backend (local sandboxes or Kubernetes pods) and streams progress back."""
