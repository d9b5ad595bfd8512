"""Helpers for the complete-system tests (app, launch, browser)."""
