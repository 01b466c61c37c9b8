"""salon-sessions: one WhatsApp Web session per salon, kept alive by a Kubernetes operator."""

__version__ = "0.1.0"
