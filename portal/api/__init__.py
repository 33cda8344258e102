"""The REST API (v1): thin viewsets over services and selectors."""
