"""ACME (RFC 8555): the wire format and the order state machine.

This package parses and answers the protocol and hands an authorization to the one issuance
pipeline; the HTTP routes live in ``server/``, the proof of identity in ``provisioners/``.
"""
