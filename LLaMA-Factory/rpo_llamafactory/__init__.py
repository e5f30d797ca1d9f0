"""RPO adaptive-margin patch layer over the pinned PyPI llamafactory release."""
