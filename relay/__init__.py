"""A self-hosted relay for OpenAI-compatible video-generation APIs."""

__version__ = "0.1.0"
