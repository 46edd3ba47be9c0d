"""Offline checks of the Dockerfile, the Kubernetes manifests and skaffold.yaml."""
