"""opentess: a self-hosted server for AI chat agents behind the Tess agent API."""

__version__ = "0.1.0"
