"""Operator tools that read a namespace through the recipes: overview, doctor, verify."""
