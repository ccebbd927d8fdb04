"""Accounts' devices and their public keys: identity keys, signed prekeys, one-time
prekeys and KEM prekeys (each one-time prekey handed out exactly once), and device linking.

The server holds public keys only; a private key never reaches it.
"""
