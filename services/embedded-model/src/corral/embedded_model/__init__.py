"""Corral's embedded default model: a scripted stand-in for the Anthropic Messages API.

Test and demo infrastructure, not a model. See the package README.
"""
