"""Logical plans: frozen operator and expression nodes, their schemas and their JSON form."""
