"""Domain logic: every transaction of the control plane lives in one of these modules."""
