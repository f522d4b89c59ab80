"""DNS above any driver: canonical names and values, the mapping of wire failures onto the port's errors, a TCP session
on dnspython, and the verification that every authoritative server answers the new data.

Modules:

* :mod:`agent.dns.names` -- canonical text of names and values; PTR names (``reverse_name``);
  the host-name rule (``derive_host_label``) and the check of configured host names.
* :mod:`agent.dns.hostnames` -- the DNS names of a config's recovery-plan VMs, checked at load.
* :mod:`agent.dns.errors` -- dnspython's and the socket layer's failures mapped onto the ``Dns``
  port's errors (whose classes live in :mod:`agent.domain.errors`).
* :mod:`agent.dns.transport` -- the I/O seam: one TCP connection, updates and pipelined queries.
* :mod:`agent.dns.pinning` -- RFC 2136 changes parsed, checked and written as pinned updates.
* :mod:`agent.dns.gss` -- GSS-TSIG (Kerberos) signing: the TKEY negotiation and its context.
* :mod:`agent.dns.verify` -- after an update, wait until every authoritative server answers it,
  and report which lag and what resolvers still cache.
"""
