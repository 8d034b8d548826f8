"""Stress: fuzzing the responder's receive path, hostile traffic on a lab, floods and soaks."""
