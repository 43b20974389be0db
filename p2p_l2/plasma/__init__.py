"""Plasma (DESIGN §6): a child chain run by one operator, committed to layer 1, with exits."""
