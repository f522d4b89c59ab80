"""Drivers: the implementations of the ports (``agent.ports``).

* ``sim/`` -- the simulated pair of sites, for the demo and the tests;
* ``rfc2136.py`` -- the Dns port over TSIG-signed RFC 2136 updates;
* ``dispatch.py`` -- ports that route each call to the driver of its host or router.

Which driver serves which config entry is decided in one place, the composition root
(:mod:`agent.wiring`); nothing else imports a driver.
"""
