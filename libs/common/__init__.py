"""Shared building blocks of every repotalk service: settings, events, bus, database, security, logging."""
