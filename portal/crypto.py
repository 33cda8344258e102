"""Encryption at rest for instance credentials and one-time secrets (MultiFernet).

The first key in PORTAL_FERNET_KEYS encrypts; every key decrypts, so keys rotate by putting
a new one first and running `manage.py rotate_fernet_keys`.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.FERNET_KEYS])


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()
