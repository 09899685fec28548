"""Secrets in every place a value is recorded (tests/test_redact.py). Every secret's text is put
together at run time, so that it is not in this source (whose copy is in the trace folder): each is
``S3CRET-<n>`` or holds it (built from PREFIX where it is used: a helper function's return
value would show it). Names that only look like secret words hold ``shown-<n>``."""

import sys
from collections import namedtuple
from dataclasses import dataclass


PREFIX = "S3CRET-"


def get_token():
    return PREFIX + "0"         # a function named like a secret: its return value is redacted


API_TOKEN = (PREFIX + "1")           # a module global: shown redacted at module level...
author = "shown-1"              # ...but author, tokenize, authority are not secrets' names
tokenize = "shown-2"


def use_globals():
    return len(API_TOKEN) + len(author)   # ...and redacted where a function reads it


def login(user, db_password, *rest, apiToken=None, **extra):
    authority = "shown-3"
    session_id = 4000 + 2       # an int: redacted, its type kept
    key_material = {"X-Api-Key": (PREFIX + "2"), "Accept": "shown-4", "nested": {"password": (PREFIX + "3")}}
    return len(user) + len(db_password) + session_id + len(authority) + len(key_material)


class Client:
    def __init__(self, user, password):
        self.user = user
        self.password = password
        self.headers = {"Authorization": "Bearer " + (PREFIX + "4") + "abcdefgh", "Accept": "shown-5"}

    def calls(self, n):
        total = 0
        for i in range(n):      # the same self at every step: its record is reused
            total += i
        return total


@dataclass
class Settings:
    debug: bool
    secret_key: str


class Slotted:
    __slots__ = ("name", "private_key")

    def __init__(self):
        self.name = "shown-6"
        self.private_key = (PREFIX + "5")


Pair = namedtuple("Pair", "label credentials")


def forms():
    aws = "AKIA" + "ABCDEFGHIJKLMNOP"           # an AWS access key id, by its form
    jwt = "eyJ" + "hbGciOiJIUzI1NiJ9.eyJzdWIiOiJTM0NSRVQtNiJ9.c2lnbmF0dXJl"
    note = "prefix Bearer " + (PREFIX + "7") + "xyzxyzxy suffix"
    plain = "a sentence with the word Bearer in it"     # not a credential
    return [aws, jwt, note, plain]


def fails():
    raise ValueError("could not log in with " + "Bearer " + (PREFIX + "8") + "qwertyui")


get_token()
total = login("alice", (PREFIX + "9"), "r1", apiToken=(PREFIX + "10"), cookie=(PREFIX + "11"))
client = Client("bob", (PREFIX + "12"))
client.calls(5)
settings = Settings(debug=False, secret_key=(PREFIX + "13"))
slotted = Slotted()
pair = Pair("shown-7", (PREFIX + "14"))
values = forms()
use_globals()
try:
    fails()
except ValueError as error:
    message = str(error)

# Output: forms are cut out of the recorded IO, the rest is kept.
print("token AKIA" + "QRSTUVWXYZ012345" + " ends")
print("-----BEGIN " + "RSA PRIVATE KEY-----")
print("MIIEpAIBAAKCAQEA" + "S3CRET" + "15")     # the key's body (base64)
print("-----END " + "RSA PRIVATE KEY-----")
print("after the key")
sys.stderr.write("auth: Bearer " + (PREFIX + "16") + "zzzzzzzz\n")
print("done", total, len(values))
