"""failover-agent: the network side of disaster recovery for Hyper-V / System Center VMM sites."""

__version__ = "0.1.0"
