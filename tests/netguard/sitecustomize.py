"""Every Python child of the test run sends datagrams to loopback only (see loopback_only.py)."""

import loopback_only

loopback_only.install()
