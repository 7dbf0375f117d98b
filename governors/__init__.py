"""Platforms, monitors, actuators (with rollback) and the policies that choose operating points."""
