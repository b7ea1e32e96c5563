"""Derm7pt data: the release_v0 reader, paired transforms and the synthetic generator."""
