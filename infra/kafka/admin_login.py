"""Exit 0 when the test broker's administrator can log in (``admin_login.py ADDRESS FILE``).

Used by ensure-auth.sh after ensure.sh: a data dir reused across many runs has been seen to
refuse the administrator's SCRAM login after a restart; its data is test data only.
"""

from __future__ import annotations

import sys
import time

from kafka import KafkaAdminClient
from kafka.errors import KafkaError


def main(address: str, password_file: str) -> int:
    with open(password_file, encoding="utf-8") as f:
        password = f.read().strip()
    deadline = time.monotonic() + 30
    while True:
        try:
            KafkaAdminClient(
                bootstrap_servers=address.split(","),
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username="jiayi-admin",
                sasl_plain_password=password,
                request_timeout_ms=5000,
            ).close()
            return 0
        except KafkaError:
            if time.monotonic() >= deadline:
                return 1
            time.sleep(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
