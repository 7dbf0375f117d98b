"""Fake sysfs trees of real boards, and the fake kernel that gives them write semantics."""
